#!/usr/bin/env python3
"""Gmail API sync benchmark against the local Gmail API (tests/gmail_fake).

    make bench-gmail
    python bench/gmail_sync.py --messages 10000   (services' env already set)

One run measures, on a mailbox of N messages (the IMAP bench's realistic mix, labels INBOX,
SENT, UNREAD, STARRED and user labels) served by the local Gmail API in a process of its own:

1. A bare google-api-python-client loop: messages.list (500 a page, every page), then
   messages.get format=raw in batch requests of 50, raw bytes decoded; nothing stored.
2. The platform's full sync of a fresh account, as a sync worker runs it (the service the
   `gmail_sync.full_sync` task calls, in this process), its batches stored by a real message
   worker (`celery worker -Q email_new_message`, as `make run` starts it); it ends when every
   message is stored. HTTP requests (a batch is one) and quota units as the server counted them,
   next to the minimum the API allows: ceil(N/500) list pages + ceil(N/50) batches.
   Rounds 1 and 2 alternate bare loop and platform, so both see the same machine. Then a
   full sync with nothing new (what the reconcile lists).
3. A history sync of C changes (new messages, label changes, deletions) on that mailbox, and a
   history sync with no change: requests spent, which must grow with C, not with N.

Targets (issue 8): platform time within 1.5x of the bare loop's, requests within 1.1x of the
minimum; the history sync's requests O(C). The platform's quota limiter is lifted unless
--units-per-second says otherwise (the bare loop has none). Bench data lives under the Django user
`bench-gmail` (removed before the run and after it, unless --keep).
"""

from __future__ import annotations

import argparse
import base64
import math
import os
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emailplatform.settings")

import django  # noqa: E402

django.setup()

import google_auth_httplib2  # noqa: E402
import httplib2  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from google.oauth2.credentials import Credentials  # noqa: E402
from googleapiclient.discovery import build  # noqa: E402
from googleapiclient.http import BatchHttpRequest  # noqa: E402

from bench.benchdata import bench_user_remove  # noqa: E402
from bench.gmail_fake_process import FakeInfo, FakeProcess  # noqa: E402
from bench.imap_sync import BASE_TIMESTAMP, MailMaker, corpus_messages  # noqa: E402
from bench.message_workers import MessageWorker  # noqa: E402
from bench.procstats import tree_cpu_seconds  # noqa: E402
from gmail_sync.models import GmailSettings  # noqa: E402
from gmail_sync.services import gmail_sync_account  # noqa: E402
from messages.models import Account, Message  # noqa: E402

BENCH_USERNAME = "bench-gmail"
EMAIL = "bench@gmail.com"
TARGET_TIME_RATIO = 1.5
TARGET_REQUEST_RATIO = 1.1
LIST_PAGE = 500
BATCH = 50


def log(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


@dataclass
class Run:
    seconds: float
    requests: int
    units: int
    messages: int
    server_cpu: float = 0.0  # CPU seconds of the local Gmail API's process
    client_cpu: float = 0.0  # ours: this process, plus the message worker's tree for a sync
    worker_cpu: float = 0.0  # of client_cpu, the message worker's tree
    database_cpu: float = 0.0  # PostgreSQL's processes (the server's tree; not in client_cpu)


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """CPU seconds the fake server and the client side (this process and WORKER) spend."""

    def __init__(self, fake: FakeProcess, worker: MessageWorker | None = None) -> None:
        self.fake, self.worker = fake, worker
        self.database = database_server_pid()

    def _now(self) -> tuple[float, float, float, float]:
        workers = 0.0
        if self.worker is not None and self.worker.proc is not None:
            workers = tree_cpu_seconds(self.worker.proc.pid)
        database = tree_cpu_seconds(self.database) if self.database else 0.0
        return tree_cpu_seconds(self.fake.pid), own_cpu_seconds() + workers, workers, database

    def __enter__(self) -> CpuMeter:
        self.start = self._now()
        return self

    def __exit__(self, *exc: object) -> None:
        spent = [end - start for start, end in zip(self.start, self._now(), strict=True)]
        self.server, self.client, self.workers, self.database_cpu = spent


def database_server_pid() -> int | None:
    """PostgreSQL's main process, when it runs on this machine (its tree is every backend)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    try:
        stat = Path(f"/proc/{backend}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def configure(info: FakeInfo, units_per_second: int) -> None:
    settings.GMAIL_CLIENT_ID = info.client_id
    settings.GMAIL_CLIENT_SECRET = info.client_secret
    settings.GMAIL_API_ENDPOINT = info.base_url + "/"
    settings.GMAIL_BATCH_URI = info.batch_uri
    settings.GMAIL_TOKEN_URI = info.token_uri
    settings.GMAIL_CA_CERTS = info.ca_certs
    settings.INGEST_DELIVERY = "queue"
    settings.GMAIL_QUOTA_UNITS_PER_SECOND = units_per_second


def bare_loop(fake: FakeProcess, refresh_token: str) -> Run:
    """What any client must do to read the mailbox: list every id, get every raw message."""
    info = fake.info
    credentials = Credentials(
        token=None,
        refresh_token=refresh_token,
        token_uri=info.token_uri,
        client_id=info.client_id,
        client_secret=info.client_secret,
    )
    http = google_auth_httplib2.AuthorizedHttp(
        credentials, http=httplib2.Http(ca_certs=info.ca_certs, timeout=60)
    )
    service = build(
        "gmail",
        "v1",
        http=http,
        static_discovery=True,
        cache_discovery=False,
        client_options={"api_endpoint": info.base_url + "/"},
    )
    messages = service.users().messages()
    fake.ask("reset_calls")
    units_before = fake.ask("units", EMAIL)
    meter = CpuMeter(fake).__enter__()
    started = time.perf_counter()
    ids: list[str] = []
    token = None
    requests = 0
    while True:
        answer = messages.list(userId="me", maxResults=LIST_PAGE, pageToken=token).execute()
        requests += 1
        ids += [m["id"] for m in answer.get("messages", [])]
        token = answer.get("nextPageToken")
        if not token:
            break
    decoded = 0
    for start in range(0, len(ids), BATCH):
        got: list[dict] = []
        batch = BatchHttpRequest(
            callback=lambda _rid, response, _exc, got=got: got.append(response),
            batch_uri=info.batch_uri,
        )
        for message_id in ids[start : start + BATCH]:
            batch.add(messages.get(userId="me", id=message_id, format="raw"))
        batch.execute(http=http)
        requests += 1
        for response in got:
            raw = response["raw"]
            decoded += len(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))) > 0
    seconds = time.perf_counter() - started
    meter.__exit__()
    assert fake.ask("calls")["requests"] == requests
    units = fake.ask("units", EMAIL) - units_before
    return Run(seconds, requests, units, decoded, meter.server, meter.client)


def new_account(owner, refresh_token: str) -> Account:
    """A fresh account of the bench mailbox (the previous round's is deleted first)."""
    Account.objects.filter(owner=owner).delete()
    account = Account(owner=owner, provider=Account.Provider.GMAIL, email_address=EMAIL)
    account.set_credentials({"refresh_token": refresh_token})
    account.save()
    GmailSettings.objects.create(account=account)
    return account


def platform_sync(fake: FakeProcess, account: Account, worker: MessageWorker, *, full: bool) -> Run:
    """A full sync (FULL) or a history sync of ACCOUNT, as the sync tasks call it."""
    fake.ask("reset_calls")
    units_before = fake.ask("units", EMAIL)
    with CpuMeter(fake, worker) as meter:
        started = time.perf_counter()
        gmail_sync_account(account.pk, full=full)
        seconds = time.perf_counter() - started
    requests = fake.ask("calls")["requests"]
    stored = Message.objects.filter(account=account).count()
    units = fake.ask("units", EMAIL) - units_before
    return Run(
        seconds,
        requests,
        units,
        stored,
        meter.server,
        meter.client,
        meter.workers,
        meter.database_cpu,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--changes", type=int, default=100, help="history sync changes")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--units-per-second",
        type=int,
        default=1_000_000,
        help="the platform's per-mailbox quota (Gmail's is 250: a raw get costs 5 units, so "
        "at most 50 messages a second); the default lifts it, to measure the platform itself",
    )
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    bench_user_remove(BENCH_USERNAME)
    owner = get_user_model().objects.create_user(BENCH_USERNAME)
    maker = MailMaker("gmail", corpus_messages())
    tmp = tempfile.TemporaryDirectory(prefix="bench-gmail-")
    wall = time.perf_counter()
    with FakeProcess() as fake:
        configure(fake.info, args.units_per_second)
        refresh_token = fake.ask("add_user", EMAIL)
        log(f"seeding {args.messages} messages")
        for start in range(0, args.messages, 1000):
            raws = [
                maker.message(i, BASE_TIMESTAMP + i * 60).raw
                for i in range(start, min(args.messages, start + 1000))
            ]
            fake.ask("seed", EMAIL, raws, (BASE_TIMESTAMP + start * 60) * 1000)
        worker = MessageWorker(args.workers, Path(tmp.name) / "message-worker.log")
        worker.start()
        bare: list[Run] = []
        full: list[Run] = []
        accounts = []
        try:
            for round_no in range(1, args.rounds + 1):
                log(f"round {round_no}: bare loop")
                bare.append(bare_loop(fake, refresh_token))
                log(f"round {round_no}: platform full sync")
                accounts.append(new_account(owner, refresh_token))
                full.append(platform_sync(fake, accounts[-1], worker, full=True))
            account = accounts[-1]
            log("full sync with nothing new (the reconcile)")
            again = platform_sync(fake, account, worker, full=True)
            new = max(1, args.changes * 4 // 10)
            modified = args.changes * 3 // 10
            deleted = args.changes - new - modified
            raws = [
                maker.message(i, BASE_TIMESTAMP + i * 60).raw
                for i in range(args.messages, args.messages + new)
            ]
            fake.ask("changes", EMAIL, raws, modified, deleted)
            history = platform_sync(fake, account, worker, full=False)
            unchanged = platform_sync(fake, account, worker, full=False)
            expected = fake.ask("message_count", EMAIL)
        finally:
            worker.stop()
    report(args, bare, full, again, history, unchanged, expected, time.perf_counter() - wall)
    if not args.keep:
        bench_user_remove(BENCH_USERNAME)
    tmp.cleanup()


def report(args, bare, full, again, history, unchanged, expected, wall) -> None:
    n = args.messages
    minimum = math.ceil(n / LIST_PAGE) + math.ceil(n / BATCH)
    print(f"Gmail sync benchmark: {n} messages, {args.rounds} rounds, {wall:.0f} s in all")
    print(
        f"{'':34} {'seconds':>8} {'msg/s':>8} {'requests':>9} {'units':>8} {'stored':>7}"
        f" {'server CPU s':>12} {'client CPU s':>12}"
    )
    for i, (b, f) in enumerate(zip(bare, full, strict=True), 1):
        for name, run in ((f"bare loop, round {i}", b), (f"platform full sync, round {i}", f)):
            rate = run.messages / run.seconds if run.seconds else 0
            print(
                f"{name:34} {run.seconds:8.1f} {rate:8.0f} {run.requests:9d} {run.units:8d}"
                f" {run.messages:7d} {run.server_cpu:12.1f} {run.client_cpu:12.1f}"
            )
    print(f"{'minimum requests (list + batches)':34} {'':8} {'':8} {minimum:9d}")
    syncs = (
        ("full sync, nothing new", again),
        (f"history sync, {args.changes} changes", history),
        ("history sync, no change", unchanged),
    )
    for name, run in syncs:
        print(
            f"{name:34} {run.seconds:8.2f} {'':8} {run.requests:9d} {run.units:8d}"
            f" {run.messages:7d}"
        )
    ratios = [f.seconds / b.seconds for b, f in zip(bare, full, strict=True)]
    request_ratio = max(f.requests for f in full) / minimum
    complete = all(f.messages == n for f in full) and history.messages == expected
    print()
    print(
        f"time vs bare loop:      {' / '.join(f'{r:.2f}x' for r in ratios)}"
        f" (median {statistics.median(ratios):.2f}x; target <= {TARGET_TIME_RATIO}x):"
        f" {'met' if max(ratios) <= TARGET_TIME_RATIO else 'MISSED'}"
    )
    print(
        f"requests vs minimum:    {request_ratio:.2f}x (target <= {TARGET_REQUEST_RATIO}x):"
        f" {'met' if request_ratio <= TARGET_REQUEST_RATIO else 'MISSED'}"
    )
    print(
        f"history sync requests:  {history.requests} for {args.changes} changes,"
        f" {unchanged.requests} for none"
    )
    cores = os.cpu_count() or 1
    client = statistics.median(f.client_cpu for f in full) / n * 1000
    bare_client = statistics.median(b.client_cpu for b in bare) / n * 1000
    server = statistics.median(b.server_cpu for b in bare) / n * 1000
    print(
        f"CPU per message:        platform {client:.1f} ms (bare loop {bare_client:.1f} ms), "
        f"the local Gmail API {server:.1f} ms, on {cores} cores (Google's CPU is not ours in "
        "production; here it shares the machine)"
    )
    workers = statistics.median(f.worker_cpu for f in full) / n * 1000
    database = statistics.median(f.database_cpu for f in full) / n * 1000
    print(
        f"platform CPU by stage:  sync process {client - workers:.1f} ms, message workers "
        f"{workers:.1f} ms a message; PostgreSQL {database:.1f} ms (not in the platform's)"
    )
    print(
        f"store equals mailbox:   {'yes' if complete else 'NO'}"
        f" ({history.messages} stored, {expected} in the mailbox)"
    )


if __name__ == "__main__":
    main()
