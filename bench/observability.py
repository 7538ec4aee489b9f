#!/usr/bin/env python3
"""What observing the platform costs: recording a metric, a /metrics scrape, and the admin
overview's messages-per-hour query on a large store, with and without its BRIN index.

    python bench/observability.py              (DATABASE_URL, CELERY_BROKER_URL set, e.g. inside
                                                scripts/devservices.py exec --temp --)
    python bench/observability.py --messages 1000000 --events 5000

Bench data lives under the user `bench-observability` (messages written by SQL, spread evenly
over the last 30 days as a steady inflow would), removed before the run and after it; the
metric series it records (task "bench.noop") are removed at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emailplatform.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from prometheus_client import generate_latest  # noqa: E402

from emailplatform import syncstate  # noqa: E402
from emailplatform.observability import metrics  # noqa: E402
from emailplatform.observability.views import _registry  # noqa: E402
from messages.models import Account, Message, Thread  # noqa: E402
from messages.overview import hourly_counts, ingested_per_hour, scoped_messages  # noqa: E402

BENCH_USERNAME = "bench-observability"
BENCH_TASK = "bench.noop"


def timed(function: Callable[[], object], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def remove_bench_user() -> None:
    owner = get_user_model().objects.filter(username=BENCH_USERNAME).first()
    if owner is None:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {Message._meta.db_table} WHERE account_id IN "
            f"(SELECT id FROM {Account._meta.db_table} WHERE owner_id = %s)",
            [owner.pk],
        )
    owner.delete()


def fill(count: int):
    owner = get_user_model().objects.create_user(BENCH_USERNAME, is_superuser=True)
    account = Account.objects.create(owner=owner, provider="local", email_address="b@bench.invalid")
    thread = Thread.objects.create(account=account, subject="bench")
    start = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {Message._meta.db_table} (
                account_id, thread_id, provider_id, server_ids, message_id_header, in_reply_to,
                "references", subject, from_name, from_address, "to", cc, bcc, reply_to,
                sort_date, snippet, body_text, body_html, size, is_read, is_flagged,
                is_answered, is_draft, has_attachments, defects, created_at, updated_at)
            SELECT %(account)s, %(thread)s, 'bench-' || g, '{{}}', '', '', '[]', 'bench ' || g,
                   '', 'a@bench.invalid', '[]', '[]', '[]', '[]', t, '', '', '', 100,
                   false, false, false, false, false, '[]', t, t
            FROM generate_series(1, %(count)s) AS g,
                 LATERAL (SELECT now() - (%(count)s - g) * (interval '30 days' / %(count)s)) AS s(t)
            """,
            {"account": account.pk, "thread": thread.pk, "count": count},
        )
        cursor.execute(f"ANALYZE {Message._meta.db_table}")
        # What autovacuum does to each filled block range (the index's autosummarize).
        cursor.execute("SELECT brin_summarize_new_values('message_created_brin')")
    print(f"  wrote {count:,} messages in {time.perf_counter() - start:.1f} s")
    return owner


def chart_query(owner, repeat: int, explain: bool) -> tuple[float, int]:
    points = ingested_per_hour(owner)
    times = timed(lambda: ingested_per_hour(owner), repeat)
    if explain:
        since = points[0][0]
        print(hourly_counts(scoped_messages(owner), since).explain(analyze=True))
    return statistics.median(times), sum(n for _, n in points)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=300_000)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--explain", action="store_true", help="print the query plans")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)

    print("Recording metrics (one pipelined Redis round trip per event):")
    labels = {"queue": "default", "task": BENCH_TASK}
    times = timed(
        lambda: metrics.task_finished(**labels, state="succeeded", seconds=0.02), args.events
    )
    print(
        f"  task_finished: median {statistics.median(times) * 1e6:.0f} us, "
        f"p95 {sorted(times)[int(0.95 * len(times))] * 1e6:.0f} us over {args.events} events"
    )

    remove_bench_user()
    try:
        print(f"Admin overview's messages-per-hour query ({args.messages:,} messages, 30 days):")
        owner = fill(args.messages)
        with_brin, stored = chart_query(owner, args.repeat, args.explain)
        with connection.cursor() as cursor:
            cursor.execute("DROP INDEX message_created_brin")
        try:
            without, stored_again = chart_query(owner, args.repeat, args.explain)
        finally:
            with connection.cursor() as cursor:
                cursor.execute(
                    f"CREATE INDEX message_created_brin ON {Message._meta.db_table} "
                    "USING brin (created_at) WITH (autosummarize = on)"
                )
        assert stored == stored_again
        print(f"  last 24 h: {stored:,} messages")
        print(f"  with the BRIN index:    median {with_brin * 1000:.1f} ms")
        print(f"  without (a full scan):  median {without * 1000:.1f} ms")
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_size_pretty(pg_relation_size('message_created_brin')), "
                f"pg_size_pretty(pg_relation_size('{Message._meta.db_table}'))"
            )
            index_size, table_size = cursor.fetchone()
        print(f"  BRIN index size {index_size} (table {table_size})")

        print("A /metrics scrape (Redis series, queues, database gauges):")
        times = timed(lambda: generate_latest(_registry()), args.repeat * 3)
        body = generate_latest(_registry())
        lines = body.count(b"\n")
        print(
            f"  median {statistics.median(times) * 1000:.1f} ms, "
            f"{len(body):,} bytes, {lines:,} lines"
        )
    finally:
        remove_bench_user()
        client = syncstate.client()
        for key in (
            metrics.counter_key("tasks_total"),
            metrics.histogram_key("task_duration_seconds"),
        ):
            stale = [f for f in client.hkeys(key) if BENCH_TASK.encode() in f]
            if stale:
                client.hdel(key, *stale)
    return 0


if __name__ == "__main__":
    sys.exit(main())
