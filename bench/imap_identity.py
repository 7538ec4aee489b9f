#!/usr/bin/env python3
"""Message identity benchmark: a UIDVALIDITY change of a big folder on the private Dovecot.

    make bench-imap-identity
    python bench/imap_identity.py --messages 2000   (services' env already set)

A fresh Dovecot user's INBOX is seeded with N messages (bench/imap_sync.py's realistic mix,
written into the maildir) and fully synced into a fresh account. Then, three times, the
folder's UIDVALIDITY is changed on the server (its dovecot-uidlist rewritten with a new V and
new UIDs, its indexes removed: what a restored backup or a lost uidlist does) and the account
synced as a scheduled incremental sync would:

1. baseline: the sync as it was before message identity, every body downloaded again and
   matched by content hash (`known_locations` switched off for this run);
2. with the server's ids (Dovecot's X-GUID);
3. without them (X-GUID not asked): Message-ID + RFC822.SIZE + INTERNALDATE.

Bodies are counted at the adapter (`ImapConnection.bodies_downloaded`). After each run the store
must hold the same messages as after the first sync (N, less the identical copies the seed
repeats, stored once), at exactly the server's new UIDs. The first full sync is also run on a
second account with the identity pass off: its cost on a sync where nothing is known. Exit
status 1 if the X-GUID run downloads a body or a check fails. Bench data lives under the Django user
`bench-imap-identity` and Dovecot users `bimap...`, removed afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# Bodies are counted here, not the message pipeline: new mail is stored by this process.
os.environ.setdefault("INGEST_DELIVERY", "inline")

import imap_sync as base  # noqa: E402  (sets up Django)
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from bench.benchdata import bench_user_remove  # noqa: E402
from messages.models import Account, Folder, Message, MessageLocation  # noqa: E402
from smtp_sync import sync as sync_service  # noqa: E402
from smtp_sync.imap import ImapConnection  # noqa: E402
from tests.imap_fixtures import maildir_uidvalidity_reset  # noqa: E402

BENCH_USERNAME = "bench-imap-identity"


@dataclass
class Run:
    label: str
    messages: int
    bodies: int
    seconds: float
    identity_seconds: float  # in `known_locations`: identity FETCHes, matching, attaching
    stored_messages: int
    check: str  # "" when the store equals the server


def counting_factory(opened: list[ImapConnection], *, server_ids: bool) -> type[ImapConnection]:
    class Counting(ImapConnection):
        try_x_guid = server_ids

        def connect(self) -> None:
            super().connect()
            opened.append(self)

    return Counting


def timed_sync(
    account: Account, label: str, *, full: bool, server_ids: bool = True, identity: bool = True
) -> Run:
    opened: list[ImapConnection] = []
    factory = counting_factory(opened, server_ids=server_ids)
    original = sync_service.known_locations
    spent = [0.0]

    def timed_known_locations(conn, folder, uids):
        t = time.perf_counter()
        try:
            return original(conn, folder, uids) if identity else list(uids)
        finally:
            spent[0] += time.perf_counter() - t

    sync_service.known_locations = timed_known_locations
    base.settle()
    start = time.perf_counter()
    try:
        report = sync_service.ImapAccountSync(
            Account.objects.get(pk=account.pk), connection_factory=factory
        ).sync(full=full)
    finally:
        sync_service.known_locations = original
    seconds = time.perf_counter() - start
    if not report.done:
        raise SystemExit(f"{label}: the sync did not finish ({report.summary()})")
    messages = Message.objects.filter(account=account).count()
    bodies = sum(c.bodies_downloaded for c in opened)
    return Run(label, messages, bodies, seconds, spent[0], messages, "")


def check_store(run: Run, account: Account, user: base.DovecotUser, expected: int) -> Run:
    """The store holds EXPECTED messages, at exactly the server's current INBOX UIDs."""
    with user.client() as c:
        status = c.select_folder("INBOX", readonly=True)
        server_uids = set(c.search(["ALL"]))
    inbox = Folder.objects.get(account=account, name="INBOX")
    stored = list(MessageLocation.objects.filter(folder=inbox).values_list("uid", "message_id"))
    problems = []
    if run.stored_messages != expected:
        problems.append(f"{run.stored_messages} messages stored, {expected} expected")
    if {uid for uid, _ in stored} != server_uids or len(stored) != len(server_uids):
        problems.append("stored UIDs differ from the server's")
    if inbox.uidvalidity != int(status[b"UIDVALIDITY"]):
        problems.append("UIDVALIDITY not recorded")
    run.messages = len(server_uids)
    run.check = "; ".join(problems)
    return run


def remove_bench_data() -> None:
    if bench_user_remove(BENCH_USERNAME):
        base.vacuum()


def print_table(runs: Sequence[Run], baseline: Run) -> None:
    header = (
        "run",
        "messages",
        "bodies downloaded",
        "seconds",
        "identity pass",
        "vs baseline",
        "store = server",
    )
    rows = [
        (
            r.label,
            f"{r.messages:,}",
            f"{r.bodies:,}",
            f"{r.seconds:.1f}",
            f"{r.identity_seconds:.1f}",
            "-"
            if r is baseline or "change" not in r.label
            else f"{baseline.seconds / r.seconds:.1f}x faster",
            r.check or "yes",
        )
        for r in runs
    ]
    widths = [max(len(row[c]) for row in [header, *rows]) for c in range(len(header))]
    for i, row in enumerate([header, *rows]):
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            print("-+-".join("-" * w for w in widths))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=10_000, help="N (default 10000)")
    parser.add_argument("--keep", action="store_true", help="keep the bench data afterwards")
    args = parser.parse_args(argv)
    if not 1 <= args.messages <= base.MAX_MESSAGES:
        parser.error(f"--messages must be 1..{base.MAX_MESSAGES}")
    dovecot = base.Dovecot.from_env()
    load_before = os.getloadavg()[0]
    call_command("migrate", verbosity=0)
    base.CORPUS[:] = base.corpus_messages()
    remove_bench_data()
    owner = get_user_model().objects.create_user(BENCH_USERNAME, f"{BENCH_USERNAME}@bench.invalid")
    try:
        user = dovecot.user_create()
        seeded = base.first_select(user, base.maildir_seed(dovecot, user, args.messages))
        base.log(f"seeded {seeded.exists:,} messages in {seeded.seconds:.1f}s")
        plain = base.account_create(owner, user)
        without = timed_sync(plain, "first full sync, identity pass off", full=True, identity=False)
        distinct = without.stored_messages
        runs = [check_store(without, plain, user, distinct)]
        base.log(f"{without.label}: {without.seconds:.1f}s, {without.bodies:,} bodies")
        Account.objects.filter(pk=plain.pk).update(email_address="plain@bench.invalid")
        account = base.account_create(owner, user)
        first = timed_sync(account, "first full sync (identity pass on)", full=True)
        runs.append(check_store(first, account, user, distinct))
        base.log(f"{first.label}: {first.seconds:.1f}s, {first.bodies:,} bodies")
        plans = [
            ("UIDVALIDITY change: plain re-download (baseline)", {"identity": False}),
            ("UIDVALIDITY change: X-GUID", {}),
            ("UIDVALIDITY change: headers only (no X-GUID)", {"server_ids": False}),
        ]
        for k, (label, options) in enumerate(plans, start=1):
            maildir_uidvalidity_reset(user.home, "INBOX", first_uid=100_000 * k)
            run = timed_sync(account, label, full=False, **options)
            runs.append(check_store(run, account, user, distinct))
            base.log(f"{label}: {run.seconds:.1f}s, {run.bodies:,} bodies")
    finally:
        if not args.keep:
            connection.close()
            remove_bench_data()
            dovecot.remove_created()
    print()
    print(
        f"Message identity benchmark: one INBOX of N={args.messages:,} on Dovecot (maildir),"
        f" {distinct:,} distinct messages (the seed repeats some identical ones)"
    )
    print(
        f"  load average (1 min) {load_before:.2f} before the run, {os.getloadavg()[0]:.2f} after"
        f" on {os.cpu_count()} CPUs (other work on the machine skews the seconds, not the bodies)"
    )
    print()
    print_table(runs, runs[2])
    xguid = runs[3]
    ok = xguid.bodies == 0 and not any(r.check for r in runs)
    print()
    print(f"target: 0 bodies downloaded after a UIDVALIDITY change with X-GUID: {xguid.bodies}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
