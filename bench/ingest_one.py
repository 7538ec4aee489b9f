#!/usr/bin/env python3
"""What storing the one message an IDLE notice brings costs the store: SQL statements and time.

    python bench/ingest_one.py                 (DATABASE_URL etc. set, e.g. inside
                                                scripts/devservices.py exec --temp --)
    python bench/ingest_one.py --samples 200 --list

An incremental pass hands its new mail to a `BatchPublisher`; a batch of one message is stored
by the producer itself (`messages.batches.stores_inline`): its IngestBatch row inserted,
`batch_store(payload, by_producer=True)`, the row collected and deleted. This bench runs exactly
that for SAMPLES one-message batches into the INBOX of an account that already holds PRELOAD
messages (every third new message a reply to an earlier one, as mail is), and prints the
statements of the last new message and of the last reply with their times (--list), their
counts, and the median and p95 wall time of a publish.

Bench data lives under the user `bench-ingest-one`: removed before the run and after it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emailplatform.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.utils import timezone  # noqa: E402

from emailplatform import topics  # noqa: E402
from messages.batches import BatchPublisher  # noqa: E402
from messages.models import Account, Folder, Message, SyncRun  # noqa: E402
from tests.mailfactory import make_mail  # noqa: E402
from tests.sql_sent import Sent, statements_sent  # noqa: E402

BENCH_USERNAME = "bench-ingest-one"


def _mail(k: int, tag: str) -> tuple[bytes, str]:
    message_id = f"<one.{tag}.{k}@bench.invalid>"
    parent = f"<one.{tag}.{k - 1}@bench.invalid>" if k % 3 == 2 else None
    raw = make_mail(
        f"IDLE sample {k}",
        message_id=message_id,
        in_reply_to=parent,
        references=[parent] if parent else None,
        body="A short note.\n" * 40,
        minutes=k,
    )
    return raw, message_id


def _item(raw: bytes, uid: int, tag: str) -> dict:
    return topics.new_message_item(
        raw,
        folder="INBOX",
        uid=uid,
        flags=["\\Seen"],
        server_id=f"{tag}{uid:024x}",
        internal_date=timezone.now().isoformat(),
    )


def publish_one(publisher: BatchPublisher, inbox: Folder, raw: bytes, uid: int, tag: str):
    """One batch as an IDLE-triggered pass publishes it; returns (seconds, statements sent)."""
    item = _item(raw, uid, tag)
    with statements_sent() as sent:
        start = time.perf_counter()
        publisher.publish([item], fetched_at=timezone.now(), folder=inbox, uids=[uid])
        publisher.drain()
        seconds = time.perf_counter() - start
    return seconds, sent


def timed_publish(publisher: BatchPublisher, inbox: Folder, raw: bytes, uid: int, tag: str):
    """The same without counting."""
    item = _item(raw, uid, tag)
    start = time.perf_counter()
    publisher.publish([item], fetched_at=timezone.now(), folder=inbox, uids=[uid])
    publisher.drain()
    return time.perf_counter() - start


def print_statements(title: str, sent: list[Sent]) -> None:
    total = sum(s.seconds for s in sent) * 1000
    print(f"\n{title}: {len(sent)} statement strings sent, {total:.1f} ms")
    for n, s in enumerate(sent, 1):
        parts = [" ".join(part.split())[:110] for part in s.sql.split(";\n")]
        print(f"  {n:2d} {s.seconds * 1000:6.2f} ms  {parts[0]}")
        for part in parts[1:]:
            print(f"              + {part}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=100, help="one-message batches (100)")
    parser.add_argument("--preload", type=int, default=200, help="messages stored first (200)")
    parser.add_argument("--list", action="store_true", help="print each statement")
    args = parser.parse_args(argv)
    settings.INGEST_DELIVERY = "queue"  # as a sync worker runs: small batches stored inline
    call_command("migrate", verbosity=0)
    get_user_model().objects.filter(username=BENCH_USERNAME).delete()
    owner = get_user_model().objects.create_user(BENCH_USERNAME, f"{BENCH_USERNAME}@x.invalid")
    try:
        account = Account.objects.create(
            owner=owner, provider=Account.Provider.LOCAL, email_address="one@bench.invalid"
        )
        inbox = Folder.objects.create(
            account=account, name="INBOX", display_name="INBOX", uidvalidity=1, role="inbox"
        )
        run = SyncRun.objects.create(account=account, kind=SyncRun.Kind.INCREMENTAL)
        publisher = BatchPublisher(account.pk, "imap", sync_run_id=run.pk)
        tag = f"{time.time_ns() % 10**9:x}"
        uid = 0
        for k in range(args.preload):
            uid += 1
            timed_publish(publisher, inbox, _mail(k, tag)[0], uid, tag)
        counts: dict[str, list[int]] = {"new": [], "reply": []}
        last: dict[str, list[Sent]] = {}
        for k in range(args.preload, args.preload + 6):
            uid += 1
            kind = "reply" if k % 3 == 2 else "new"
            _, queries = publish_one(publisher, inbox, _mail(k, tag)[0], uid, tag)
            counts[kind].append(len(queries))
            last[kind] = queries
        times = []
        for k in range(args.preload + 6, args.preload + 6 + args.samples):
            uid += 1
            times.append(timed_publish(publisher, inbox, _mail(k, tag)[0], uid, tag))
        stored = Message.objects.filter(account=account).count()
        if args.list:
            for kind, queries in last.items():
                print_statements(f"a one-message batch, {kind} message", queries)
        times.sort()
        p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
        print()
        print(
            f"one-message batch (publish + drain, stored by its producer), {args.samples}"
            f" samples after {args.preload} stored; {stored} messages stored"
        )
        print(
            f"  statement strings sent (round trips): new message {max(counts['new'])},"
            f" reply {max(counts['reply'])}, plus BEGIN and COMMIT of each transaction"
        )
        print(
            f"  wall time: median {statistics.median(times) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms"
        )
        return 0 if stored == args.preload + 6 + args.samples else 1
    finally:
        get_user_model().objects.filter(username=BENCH_USERNAME).delete()


if __name__ == "__main__":
    sys.exit(main())
