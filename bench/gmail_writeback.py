#!/usr/bin/env python3
"""Gmail write-back benchmark: how long a client's change and a send take end to end against
the local Gmail API (tests/gmail_fake), and how much of it is the store's.

    make bench-gmail-writeback
    python bench/gmail_writeback.py --messages 200 --rounds 200   (services' env already set)

A mailbox of --messages messages (INBOX, UNREAD) is stored as a sync stores it. Then, timed
one by one: --rounds Gmail modify calls alone (GmailClient.modify, marking read and unread in
turn: the API's share), --rounds changes through the service the change task runs
(`gmail_message_change`: modify, then the store set to Gmail's answer with its change events),
with its parts alone (the account's GmailClient built, `labels_store`),
and --rounds // 4 sends (as gmail_sync.outbound does: send, get raw, store through the
ingestion pipeline).
Sends are paced, 0.5 s apart (untimed), so that the mailbox's quota bucket is full for each:
Gmail allows 250 units a second per mailbox and a send costs 100 (its get 5), so back to
back the quota limiter (gmail_sync.quota) holds each send about 0.4 s, as Gmail would.
Bench data: the Django user `bench-gmail-writeback`, removed afterwards. The database is
migrated first.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emailplatform.settings")
os.environ.setdefault("INGEST_DELIVERY", "inline")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402

from bench.benchdata import bench_user_remove  # noqa: E402
from emailplatform.topics import IncomingMessage  # noqa: E402
from gmail_sync.changes import gmail_message_change, labels_store  # noqa: E402
from gmail_sync.connection import gmail_client_for  # noqa: E402
from gmail_sync.ids import store_id  # noqa: E402
from gmail_sync.labels import message_flags  # noqa: E402
from gmail_sync.models import GmailSettings  # noqa: E402
from gmail_sync.send import store_sent  # noqa: E402
from messages.ingest import messages_upsert  # noqa: E402
from messages.models import Account, Message  # noqa: E402
from tests.gmail_fake.server import GmailFake  # noqa: E402
from tests.mailfactory import make_mail  # noqa: E402

BENCH_USERNAME = "bench-gmail-writeback"


def point_settings_at(fake: GmailFake) -> None:
    settings.GMAIL_CLIENT_ID = fake.client_id
    settings.GMAIL_CLIENT_SECRET = fake.client_secret
    settings.GMAIL_API_ENDPOINT = fake.base_url + "/"
    settings.GMAIL_BATCH_URI = fake.batch_uri
    settings.GMAIL_TOKEN_URI = fake.token_uri
    settings.GMAIL_CA_CERTS = fake.ca_certs


def timed(rounds: int, step: Callable[[int], object], pause: float = 0.0) -> list[float]:
    times = []
    for i in range(rounds):
        time.sleep(pause)
        start = time.perf_counter()
        step(i)
        times.append((time.perf_counter() - start) * 1000)
    return times


def row(label: str, times: list[float]) -> str:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return (
        f"  {label:<38} {len(times):>5}  p50 {statistics.median(times):6.1f} ms"
        f"  p95 {p95:6.1f} ms  mean {statistics.fmean(times):6.1f} ms"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args(argv)
    call_command("migrate", verbosity=0)
    bench_user_remove(BENCH_USERNAME)
    fake = GmailFake()
    point_settings_at(fake)
    load_before = os.getloadavg()[0]
    try:
        box, refresh_token = fake.add_user("bench@gmail.com")
        owner = get_user_model().objects.create_user(BENCH_USERNAME)
        account = Account.objects.create(owner=owner, provider="gmail", email_address=box.email)
        account.set_credentials({"refresh_token": refresh_token})
        account.save()
        GmailSettings.objects.create(account=account)
        fakes = [box.add_message(make_mail(f"m{i}", minutes=i)) for i in range(args.messages)]
        items = [
            IncomingMessage(
                raw=m.raw,
                provider_id=store_id(m.id),
                provider_thread_id=store_id(m.thread_id),
                folders=sorted(set(m.label_ids) - {"UNREAD"}),
                flags=message_flags(m.label_ids),
            )
            for m in fakes
        ]
        for start in range(0, len(items), 100):
            messages_upsert(account=account, items=items[start : start + 100])
        stored = list(Message.objects.filter(account=account).order_by("id"))
        client = gmail_client_for(account)
        client.profile()  # the access token, once

        def modify(i: int) -> None:
            gid = fakes[i % len(fakes)].id
            read = (i // len(fakes)) % 2 == 0
            client.modify(gid, add=[] if read else ["UNREAD"], remove=["UNREAD"] if read else [])

        def change(i: int) -> None:
            read = (i // len(stored)) % 2 == 1  # the store rounds left them read, then unread
            gmail_message_change(stored[i % len(stored)].pk, {"read": read})

        def store_alone(i: int) -> None:
            read = (i // len(stored)) % 2 == 0
            labels = ["INBOX"] if read else ["INBOX", "UNREAD"]
            labels_store(stored[i % len(stored)], labels)

        def send(i: int) -> None:
            # What the outbox's Gmail sender does once a message is claimed (gmail_sync.outbound).
            sender = gmail_client_for(account)
            sent = sender.send(make_mail(f"sent {i}", to="bob@example.org"))
            store_sent(account, sender, sent["id"])

        modify_ms = timed(args.rounds, modify)
        client_ms = timed(args.rounds, lambda i: gmail_client_for(account))
        store_ms = timed(args.rounds, store_alone)
        change_ms = timed(args.rounds, change)
        send_ms = timed(max(1, args.rounds // 4), send, pause=0.5)
    finally:
        bench_user_remove(BENCH_USERNAME)
        fake.close()

    print()
    print(
        f"Gmail write-back against the local Gmail API: {args.messages} messages stored,"
        f" Python {platform.python_version()}, {os.cpu_count()} CPUs;"
        f" load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
    )
    print(row("Gmail modify alone (client)", modify_ms))
    print(row("GmailClient for the account", client_ms))
    print(row("store alone (labels_store)", store_ms))
    print(row("change: modify + store + events", change_ms))
    print(row("send: send + get raw + store (paced)", send_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
