#!/usr/bin/env python3
"""Webhook benchmark: change events delivered end to end (from the first commit until the
receiver has them all), next to a bare `requests` loop posting the same bodies to the same
receiver in the same run.

    make bench-webhooks
    python bench/webhooks.py --events 5000 [--per-commit 10]
                             (services' env already set: scripts/devservices.py exec --temp)

The platform's path, as in production: transactions that record change events (`message
updated` of real stored messages, --per-commit events each), the commit's nudge (Redis, the
`webhooks` queue), a real Celery worker (`celery worker -Q webhooks`, as `make run` starts it)
running `webhooks.deliver`: the fan-out from the owner's events into delivery rows with their
payloads (the messages read from PostgreSQL), then the POSTs (signed, through the outbound
guard's connections, keep-alive) and the log rows written in bulk. One endpoint: its deliveries
go out in event order, one at a time, so the worker's concurrency does not help here. Then the
same number of events as a backlog (recorded while the endpoint is disabled, then enabled):
delivery alone, with no producer competing for the CPUs.

The bare loop: one `requests.Session`, `post` of each delivered body in sequence (no signature,
no guard, no database). The receiver (bench/webhook_receiver_process.py, http.server in a
process of its own) answers 204 and counts.

Bench data: the Django user `bench-webhooks`, removed afterwards. The database is migrated first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emailplatform.settings")
os.environ.setdefault("INGEST_DELIVERY", "inline")

import django  # noqa: E402

django.setup()

import requests  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import transaction  # noqa: E402

from bench.benchdata import bench_user_remove  # noqa: E402
from bench.message_workers import BenchWorker  # noqa: E402
from messages.events import events_record  # noqa: E402
from messages.ingest import messages_upsert  # noqa: E402
from messages.models import Account  # noqa: E402
from webhooks.models import WebhookDelivery  # noqa: E402
from webhooks.services import endpoint_create, endpoint_update  # noqa: E402

BENCH_USERNAME = "bench-webhooks"
MESSAGES = 200  # distinct stored messages the events name (payloads read them)


def log(text: str) -> None:
    print(text, flush=True)


class Receiver:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "webhook_receiver_process.py")],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}/hook"

    def count(self) -> int:
        return int(requests.get(f"http://127.0.0.1:{self.port}/count", timeout=5).text)

    def wait_for(self, count: int, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count() >= count:
                return time.perf_counter()
            time.sleep(0.02)
        raise SystemExit(f"the receiver has {self.count()} of {count} after {timeout:.0f} s")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def stored_messages(account: Account, count: int) -> list[int]:
    from emailplatform.topics import IncomingMessage
    from tests.mailfactory import make_mail

    items = [
        IncomingMessage(
            raw=make_mail(f"Report {i}", message_id=f"<bench-{i}@x>", minutes=i),
            folders=["INBOX"],
            uid=i + 1,
        )
        for i in range(count)
    ]
    return list(messages_upsert(account=account, items=items).message_ids)


def produce(account: Account, message_ids: list[int], events: int, per_commit: int) -> float:
    """Record EVENTS `message updated` events, PER_COMMIT a transaction; return the time of
    the first commit."""
    first = None
    for start in range(0, events, per_commit):
        ids = [message_ids[i % len(message_ids)] for i in range(start, start + per_commit)]
        with transaction.atomic():
            # one event per id and transaction: distinct ids in each
            events_record(account, "message", "updated", list(dict.fromkeys(ids)))
        first = first or time.perf_counter()
    return first or time.perf_counter()


def bare_run(url: str, bodies: list[bytes]) -> float:
    with requests.Session() as session:
        started = time.perf_counter()
        for body in bodies:
            session.post(url, data=body, headers={"Content-Type": "application/json"}).close()
        return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--per-commit", type=int, default=10, help="events per transaction")
    args = parser.parse_args()
    if args.per_commit > MESSAGES:
        raise SystemExit(f"--per-commit is at most {MESSAGES}")
    events = args.events - args.events % args.per_commit

    allowed = sorted({*settings.OUTBOUND_ALLOWED_NETWORKS, "127.0.0.1"})
    settings.OUTBOUND_ALLOWED_NETWORKS = allowed
    call_command("migrate", verbosity=0)
    bench_user_remove(BENCH_USERNAME)
    work = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    receiver = Receiver()
    worker = None
    try:
        owner = get_user_model().objects.create_user(BENCH_USERNAME)
        account = Account.objects.create(
            owner=owner, provider=Account.Provider.LOCAL, email_address="bench@example.com"
        )
        message_ids = stored_messages(account, MESSAGES)
        worker = BenchWorker(
            ["webhooks"],
            2,
            work / "worker.log",
            {"OUTBOUND_ALLOWED_NETWORKS": ",".join(allowed)},
            label="webhook",
        )
        worker.start()
        log(
            f"{events} events, {args.per_commit} per commit, one endpoint (http on loopback); "
            f"{platform.python_implementation()} {platform.python_version()}, "
            f"{os.cpu_count()} CPUs"
        )
        endpoint, _secret = endpoint_create(owner=owner, url=receiver.url)
        produce(account, message_ids, args.per_commit, args.per_commit)  # warm-up
        receiver.wait_for(args.per_commit, timeout=60)

        base = receiver.count()
        started = produce(account, message_ids, events, args.per_commit)
        produced = time.perf_counter()
        finished = receiver.wait_for(base + events, timeout=600)
        platform_s = finished - started
        delivered = WebhookDelivery.objects.filter(endpoint=endpoint, status="delivered")
        deadline = time.monotonic() + 60  # the log rows of the last chunk follow its POSTs
        while delivered.count() != events + args.per_commit and time.monotonic() < deadline:
            time.sleep(0.1)
        if delivered.count() != events + args.per_commit:
            raise SystemExit(f"{delivered.count()} deliveries recorded delivered")
        latencies = sorted(delivered.values_list("latency_ms", flat=True))
        bodies = [
            json.dumps(p, separators=(",", ":")).encode()
            for p in delivered.order_by("event_id").values_list("payload", flat=True)[
                args.per_commit :
            ]
        ]
        bare_run(receiver.url, bodies[:50])  # warm-up
        bare_s = [bare_run(receiver.url, bodies)]

        # A backlog (the endpoint was down or disabled): delivery alone, nothing else running.
        endpoint_update(endpoint=endpoint, data={"is_active": False})
        produce(account, message_ids, events, args.per_commit)
        base = receiver.count()
        backlog_started = time.perf_counter()
        endpoint_update(endpoint=endpoint, data={"is_active": True})
        backlog_s = receiver.wait_for(base + events, timeout=600) - backlog_started
        # Again right after: the machine's other load changes over a run; both are shown.
        bare_s.append(bare_run(receiver.url, bodies))
    finally:
        if worker is not None:
            worker.stop()
        receiver.stop()
        bench_user_remove(BENCH_USERNAME)

    platform_rate, backlog_rate = events / platform_s, events / backlog_s
    bare_rates = [events / b for b in bare_s]
    log("")
    log(f"{'path':<62} {'seconds':>8} {'events/s':>9}")
    log(
        f"{'recording the events (transactions committed)':<62} {produced - started:>8.2f} "
        f"{events / (produced - started):>9.1f}"
    )
    log(
        f"{'platform end to end: first commit -> all received':<62} {platform_s:>8.2f} "
        f"{platform_rate:>9.1f}"
    )
    log(
        f"{'platform, a backlog: enabled -> all received (nothing else runs)':<62} "
        f"{backlog_s:>8.2f} {events / backlog_s:>9.1f}"
    )
    labels = ("after end to end", "after the backlog")
    for label, seconds, rate in zip(labels, bare_s, bare_rates, strict=True):
        name = f"bare requests loop, same bodies, {label}"
        log(f"{name:<62} {seconds:>8.2f} {rate:>9.1f}")
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    log(
        f"\nbare / platform: {bare_rates[0] / platform_rate:.2f}x end to end, "
        f"{bare_rates[1] / backlog_rate:.2f}x for a backlog (each next to the bare run after it)"
    )
    log(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    log(f"POST latency recorded per delivery: p50 {p50} ms, p99 {p99} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
