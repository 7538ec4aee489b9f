#!/usr/bin/env python3
"""Gmail sync benchmark against the local Gmail API (tests/gmail_fake).

    make bench-gmail
    python bench/gmail_api.py --messages 1000 [--queue]   (services' env already set)

A fresh fake mailbox gets N messages (about 2.5 KB each) under a few labels. Measured:

1. baseline: the same mailbox listed (500 ids a page) and fetched raw in batches of 50 through
   GmailClient, nothing stored: what any Gmail sync must spend;
2. full sync into a fresh account (`gmail_sync_account(full=True)`); by default
   INGEST_DELIVERY=inline (this process parses and stores each batch); with --queue through
   `email_new_message` and one real message worker process (`celery worker`, prefork, 1),
   as production runs it (batches of at most 10 small messages are still stored inline);
3. a second full sync with nothing new (the reconcile: ids and label members listed);
4. a history sync after K changes (a third new messages, a third label changes, a third
   deletions), and a history sync with nothing new (median of 5).

For each: seconds, Gmail API calls (a batch counts each of its parts) and quota units. Quota
is per mailbox: --units-per-second 250 is Gmail's (a raw get is 5 units: at most 50 messages a
second); the default lifts it to show the platform's own cost. Bench data is removed afterwards.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emailplatform.settings")
DELIVERY = "queue" if "--queue" in sys.argv else "inline"
os.environ["INGEST_DELIVERY"] = DELIVERY

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402

from emailplatform import topics  # noqa: E402
from gmail_sync.client import GmailClient  # noqa: E402
from gmail_sync.models import GmailSettings  # noqa: E402
from gmail_sync.services import gmail_sync_account  # noqa: E402
from messages.models import Account, Message  # noqa: E402
from tests.gmail_fake.server import GmailFake  # noqa: E402
from tests.mailfactory import make_mail  # noqa: E402

BENCH_USERNAME = "bench-gmail"


def point_settings_at(fake: GmailFake, units_per_second: int) -> None:
    settings.GMAIL_CLIENT_ID = fake.client_id
    settings.GMAIL_CLIENT_SECRET = fake.client_secret
    settings.GMAIL_API_ENDPOINT = fake.base_url + "/"
    settings.GMAIL_BATCH_URI = fake.batch_uri
    settings.GMAIL_TOKEN_URI = fake.token_uri
    settings.GMAIL_CA_CERTS = fake.ca_certs
    settings.GMAIL_QUOTA_UNITS_PER_SECOND = units_per_second


def measured(fake: GmailFake, email: str, work: Callable[[], object]) -> tuple[float, int, int]:
    """(seconds, API calls, quota units) of WORK."""
    calls, units = len(fake.calls), fake.quota.used.get(email, 0)
    started = time.perf_counter()
    work()
    return time.perf_counter() - started, len(fake.calls) - calls, fake.quota.used[email] - units


def baseline(token: str, email: str) -> None:
    client = GmailClient(token, email)
    ids, page_token = [], None
    while True:
        page = client.list_messages(page_token=page_token)
        ids += [m["id"] for m in page.messages]
        page_token = page.next_page_token
        if not page_token:
            break
    client.get_messages(ids, fmt="raw")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=90)
    parser.add_argument("--units-per-second", type=int, default=1_000_000)
    parser.add_argument("--queue", action="store_true", help="store through a message worker")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    get_user_model().objects.filter(username=BENCH_USERNAME).delete()
    owner = get_user_model().objects.create_user(BENCH_USERNAME, "bench@bench.invalid")
    fake = GmailFake()
    point_settings_at(fake, args.units_per_second)
    worker = None
    if args.queue:
        from tests.worker import start_worker

        log = Path(tempfile.mkdtemp(prefix="bench-gmail-")) / "worker.log"
        worker = start_worker([topics.QUEUE_NEW_MESSAGE], log)
        time.sleep(5)  # the worker's start
    email = f"bench-{os.getpid()}@gmail.com"
    try:
        box, token = fake.add_user(email)
        work = box.add_label("Work")
        body = "Lorem ipsum dolor sit amet, consectetur adipiscing elit.\n" * 40
        for i in range(args.messages):
            labels = ["INBOX"] + (["UNREAD"] if i % 3 else []) + ([work.id] if i % 5 == 0 else [])
            raw = make_mail(f"m{i}", message_id=f"<m{i}@bench>", body=body, minutes=i)
            box.add_message(raw.replace(b"\n", b"\r\n"), labels)
        account = Account.objects.create(owner=owner, provider="gmail", email_address=email)
        account.set_credentials({"refresh_token": token})
        account.save()
        GmailSettings.objects.create(account=account)
        rows = []
        rows.append(
            (
                "baseline: list + batched raw gets",
                *measured(fake, email, lambda: baseline(token, email)),
            )
        )
        rows.append(
            ("full sync", *measured(fake, email, lambda: gmail_sync_account(account.pk, full=True)))
        )
        stored = Message.objects.filter(account=account).count()
        assert stored == args.messages, (stored, args.messages)
        rows.append(
            (
                "full sync, nothing new",
                *measured(fake, email, lambda: gmail_sync_account(account.pk, full=True)),
            )
        )
        ids = list(box.messages)
        third = args.changes // 3
        for i in range(third):
            box.add_message(make_mail(f"n{i}", message_id=f"<n{i}@bench>", body=body), ["INBOX"])
            box.modify(ids[i], add=["STARRED"], remove=["UNREAD"])
            box.delete(ids[-1 - i])
        rows.append(
            (
                f"history sync, {3 * third} changes",
                *measured(fake, email, lambda: gmail_sync_account(account.pk)),
            )
        )
        quiet = [measured(fake, email, lambda: gmail_sync_account(account.pk)) for _ in range(5)]
        rows.append(
            (
                "history sync, nothing new (median of 5)",
                statistics.median(q[0] for q in quiet),
                quiet[0][1],
                quiet[0][2],
            )
        )
        print(
            f"\nGmail sync of {args.messages} messages ({args.units_per_second:,} quota units/s,"
            f" {DELIVERY} delivery)\n"
        )
        print(f"{'':42} {'seconds':>8} {'msg/s':>8} {'calls':>7} {'units':>7}")
        for label, seconds, calls, units in rows:
            rate = (
                f"{args.messages / seconds:,.0f}" if "full" in label or "baseline" in label else ""
            )
            print(f"{label:42} {seconds:8.2f} {rate:>8} {calls:7,} {units:7,}")
    finally:
        if worker is not None:
            from tests.worker import stop_worker

            stop_worker(worker)
        fake.close()
        get_user_model().objects.filter(username=BENCH_USERNAME).delete()
    return 0


if __name__ == "__main__":
    sys.exit(main())
