#!/usr/bin/env python3
"""What composing costs the API, per message: `POST /api/outbound/` (batch size 1) and
`POST /api/outbound/batch/` with N messages, through the whole Django stack in-process
(rest_framework.test.APIClient with a token: auth, throttles, DRF, the outbox's checks, the
MIME built, the rows, the events, the send tasks enqueued on Redis after the commit).

    python bench/outbox_compose.py [--sizes 1,10,100] [--messages 500] [--profile 100]
                                   (services' env already set: scripts/devservices.py exec --temp)

For each batch size: ms per message (median of the requests' times divided by the size) and
the SQL queries per request. --profile N prints cProfile's top functions for batches of N.
Bench data: the Django user `bench-outbox-compose` and its account (it sends nowhere: its
messages are deleted with it at the end, so their send tasks find nothing to send).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emailplatform.settings")
os.environ.setdefault("THROTTLE_USER", "10000000/minute")
os.environ.setdefault("THROTTLE_SEND", "10000000/minute")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from knox.models import AuthToken  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

from bench.benchdata import bench_user_remove  # noqa: E402
from bench.smtp_send import message as item  # noqa: E402
from messages.models import Account  # noqa: E402

BENCH_USERNAME = "bench-outbox-compose"


def post(client: APIClient, account: Account, size: int, start: int) -> None:
    if size == 1:
        response = client.post("/api/outbound/", item(account, start), format="json")
    else:
        body = {"messages": [item(account, start + i) for i in range(size)]}
        response = client.post("/api/outbound/batch/", body, format="json")
    if response.status_code != 201:
        raise SystemExit(f"answered {response.status_code}: {response.content[:500]!r}")


def measure(client: APIClient, account: Account, size: int, messages: int) -> tuple[float, int]:
    """(median ms per message, queries per request) over about MESSAGES messages."""
    post(client, account, size, 0)  # warm-up
    times = []
    for n in range(max(3, messages // size)):
        started = time.perf_counter()
        post(client, account, size, n * size)
        times.append((time.perf_counter() - started) * 1000 / size)
    with CaptureQueriesContext(connection) as captured:
        post(client, account, size, 0)
    return statistics.median(times), len(captured)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,10,100")
    parser.add_argument("--messages", type=int, default=500, help="messages per batch size")
    parser.add_argument("--profile", type=int, default=0, help="cProfile batches of this size")
    args = parser.parse_args()
    if "testserver" not in settings.ALLOWED_HOSTS and "*" not in settings.ALLOWED_HOSTS:
        settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    call_command("migrate", verbosity=0)
    bench_user_remove(BENCH_USERNAME)
    try:
        owner = get_user_model().objects.create_user(BENCH_USERNAME)
        account = Account.objects.create(
            owner=owner,
            provider=Account.Provider.IMAP,
            email_address="bench-compose@example.com",
            display_name="Bench Sender",
        )
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {AuthToken.objects.create(owner)[1]}")
        print(f"{'batch size':>10} {'ms/message':>11} {'queries/request':>16}", flush=True)
        for size in (int(s) for s in args.sizes.split(",")):
            ms, queries = measure(client, account, size, args.messages)
            print(f"{size:>10} {ms:>11.2f} {queries:>16}", flush=True)
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            for n in range(5):
                post(client, account, args.profile, n * args.profile)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
    finally:
        bench_user_remove(BENCH_USERNAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
