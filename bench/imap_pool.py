#!/usr/bin/env python3
"""IMAP session pool benchmark: a burst of incremental syncs of one account, without and with
the pool (smtp_sync.pool), against the private Dovecot.

    make bench-imap-pool
    python bench/imap_pool.py --syncs 50 --messages 200   (services' env already set)

A fresh Dovecot user gets --messages messages in its INBOX; an account of it is fully synced.
Then, for each mode (pooling off: IMAP_POOL_MAX_CONNECTIONS=0; on: the settings' defaults),
--syncs rounds of what an IDLE burst does: one message APPENDed (through a session held open
for the whole run, not timed), then `imap_sync_account` (the entry point the IDLE trigger's
task runs, lock included), timed. Logins are counted twice: by the pool (sessions it opened)
and in Dovecot's log (`Login: user=<...>` lines of the user during the mode).

Bench data: the Django user `bench-imap-pool` and the Dovecot user `bpool...`, both removed
afterwards unless --keep. The database is migrated first.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emailplatform.settings")
# Logins are counted here, not the message pipeline: new mail is stored by this process.
os.environ.setdefault("INGEST_DELIVERY", "inline")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from imapclient import IMAPClient  # noqa: E402

from bench.benchdata import bench_user_remove, dovecot_env  # noqa: E402
from messages.models import Account  # noqa: E402
from smtp_sync.accounts import ImapAccountInput, imap_account_create  # noqa: E402
from smtp_sync.pool import default_pool, default_pool_reset  # noqa: E402
from smtp_sync.services import imap_sync_account  # noqa: E402

BENCH_USERNAME = "bench-imap-pool"
DOVECOT_USER_PREFIX = "bpool"


def log(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


@dataclass
class MailUser:
    host: str
    port: int
    username: str
    password: str
    users_dir: Path
    home_dir: Path

    @classmethod
    def create(cls) -> MailUser:
        host, port, users_dir, home_dir = dovecot_env("make bench-imap-pool")
        username = f"{DOVECOT_USER_PREFIX}{uuid.uuid4().hex[:12]}"
        password = uuid.uuid4().hex
        (users_dir / username).write_text(f"{username}:{{PLAIN}}{password}\n")
        return cls(host, port, username, password, users_dir, home_dir)

    def client(self) -> IMAPClient:
        client = IMAPClient(self.host, port=self.port, ssl=False, timeout=60)
        client.login(self.username, self.password)
        return client

    def logins(self) -> int:
        """`Login:` lines of this user in Dovecot's log so far."""
        path = self.users_dir.parent / "dovecot.log"
        tag = f"user=<{self.username}>"
        text = path.read_text(errors="replace")
        return sum(1 for line in text.splitlines() if "Login:" in line and tag in line)

    def remove(self) -> None:
        (self.users_dir / self.username).unlink(missing_ok=True)
        shutil.rmtree(self.home_dir / self.username, ignore_errors=True)


def mail(i: int) -> bytes:
    message = EmailMessage()
    message["From"] = "Alice <alice@example.org>"
    message["To"] = "Bob <bob@example.org>"
    message["Subject"] = f"Pool bench message {i}"
    message["Message-ID"] = f"<pool-bench-{i}-{uuid.uuid4().hex[:8]}@example.org>"
    message["Date"] = "Mon, 30 Nov 2026 12:00:00 +0000"
    message.set_content(f"Message {i}.\n" + "Some words of a plain message body.\n" * 40)
    return bytes(message)


def wait_for_log(user: MailUser, at_least: int, seconds: float = 3.0) -> int:
    """Dovecot's log process writes a moment after the login: wait for AT_LEAST lines."""
    deadline = time.monotonic() + seconds
    while (count := user.logins()) < at_least and time.monotonic() < deadline:
        time.sleep(0.05)
    return count


@dataclass
class ModeResult:
    label: str
    seconds: list[float]
    pool_logins: int
    server_logins: int
    new: int

    def pct(self, pct: int) -> float:
        return statistics.quantiles(self.seconds, n=100, method="inclusive")[pct - 1]


def burst(
    label: str, pooled: bool, account: Account, user: MailUser, appender, syncs: int, seq: int
) -> ModeResult:
    settings.IMAP_POOL_MAX_CONNECTIONS = default_max if pooled else 0
    default_pool_reset()
    before = user.logins()
    seconds: list[float] = []
    new = 0
    for i in range(syncs):
        appender.append("INBOX", mail(seq + i))
        start = time.perf_counter()
        report = imap_sync_account(account.pk)
        seconds.append(time.perf_counter() - start)
        new += report.new if report else 0
    pool_logins = default_pool().stats.logins
    default_pool_reset()
    server_logins = wait_for_log(user, before + pool_logins) - before
    log(f"[{label}] {syncs} syncs, {pool_logins} logins, median {statistics.median(seconds):.3f}s")
    return ModeResult(label, seconds, pool_logins, server_logins, new)


def remove_bench_data() -> None:
    bench_user_remove(BENCH_USERNAME)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("-+-".join("-" * w for w in widths))


default_max = settings.IMAP_POOL_MAX_CONNECTIONS


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--syncs", type=int, default=50, help="syncs per mode (default 50)")
    parser.add_argument("--messages", type=int, default=200, help="INBOX size (default 200)")
    parser.add_argument("--keep", action="store_true", help="keep the bench data afterwards")
    args = parser.parse_args(argv)
    if args.syncs < 2 or args.messages < 0:
        parser.error("--syncs must be at least 2, --messages at least 0")
    if default_max <= 0:
        parser.error("IMAP_POOL_MAX_CONNECTIONS is 0 (pooling off): nothing to compare")
    if settings.DEBUG:
        print("warning: DEBUG is on; numbers will be worse than production", file=sys.stderr)

    call_command("migrate", verbosity=0)
    remove_bench_data()
    owner = get_user_model().objects.create_user(BENCH_USERNAME, f"{BENCH_USERNAME}@bench.invalid")
    user = MailUser.create()
    wall = time.perf_counter()
    load_before = os.getloadavg()[0]
    try:
        with user.client() as appender:
            for i in range(args.messages):
                appender.append("INBOX", mail(i))
            account = imap_account_create(
                owner=owner,
                data=ImapAccountInput(
                    email_address=f"{user.username}@bench.invalid",
                    imap_host=user.host,
                    imap_port=user.port,
                    imap_security="none",
                    username=user.username,
                    password=user.password,
                ),
                start_sync=False,
            )
            imap_sync_account(account.pk, full=True)
            imap_sync_account(account.pk)  # warm: the first incremental pass of the account
            log(f"seeded and synced {args.messages} messages")
            seq = args.messages
            off = burst("no pool", False, account, user, appender, args.syncs, seq)
            on = burst("pool", True, account, user, appender, args.syncs, seq + args.syncs)
    finally:
        settings.IMAP_POOL_MAX_CONNECTIONS = default_max
        default_pool_reset()
        if not args.keep:
            remove_bench_data()
            user.remove()

    print()
    print(
        f"IMAP pool benchmark: {args.syncs} incremental syncs per mode (one new message each),"
        f" INBOX of {args.messages}+ messages; {time.perf_counter() - wall:.0f} s in all"
    )
    print(f"  Python {platform.python_version()}, {os.cpu_count()} CPUs, private Dovecot")
    print(
        f"  load average (1 min) {load_before:.2f} before the run, {os.getloadavg()[0]:.2f} after"
        " (other work on the machine skews the times)"
    )
    print(
        f"  pool: {settings.IMAP_POOL_MAX_CONNECTIONS} sessions per process,"
        f" {settings.IMAP_POOL_MAX_PER_ACCOUNT} per account,"
        f" idle {settings.IMAP_POOL_IDLE_SECONDS:g} s"
    )
    print()
    rows = [("mode", "logins (pool)", "logins (Dovecot log)", "new", "p50", "p95", "mean")]
    for r in (off, on):
        rows.append(
            (
                r.label,
                str(r.pool_logins),
                str(r.server_logins),
                str(r.new),
                _ms(r.pct(50)),
                _ms(r.pct(95)),
                _ms(statistics.mean(r.seconds)),
            )
        )
    rows.append(
        (
            "ratio (no pool / pool)",
            f"{off.pool_logins / max(1, on.pool_logins):.0f}x",
            f"{off.server_logins / max(1, on.server_logins):.0f}x",
            "",
            f"{off.pct(50) / on.pct(50):.2f}x",
            f"{off.pct(95) / on.pct(95):.2f}x",
            f"{statistics.mean(off.seconds) / statistics.mean(on.seconds):.2f}x",
        )
    )
    print_table(rows)
    ok = on.server_logins == 1 and off.server_logins == args.syncs
    ok = ok and off.new == on.new == args.syncs
    if not ok:
        print("\nunexpected: the pool should log in once, no pool once per sync, each sync one new")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
