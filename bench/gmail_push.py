#!/usr/bin/env python3
"""Gmail push endpoint benchmark: what one push costs at POST /gmail/push, by kind of push,
with --accounts Gmail accounts in the store, and the address lookup with and without its index.

    .venv/bin/python scripts/devservices.py exec --temp -- .venv/bin/python bench/gmail_push.py
    python bench/gmail_push.py --accounts 100000 --pushes 500   (services' env already set)

Pushes go through Django's full request stack (test Client, every middleware) with tokens the
test suite's fake Pub/Sub signs (tests/gmail_fake, certificates served over HTTP), and publish
to the real Redis broker (the gmail queue is emptied afterwards). The lookup is timed with
EXPLAIN ANALYZE, then again with the index dropped inside a transaction that is rolled back.

Bench data: the Django user `bench-gmail-push` and its accounts, removed afterwards.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emailplatform.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test import Client  # noqa: E402

from emailplatform import syncstate, topics  # noqa: E402
from gmail_sync.models import GmailSettings  # noqa: E402
from gmail_sync.push import marker_key  # noqa: E402
from gmail_sync.push_auth import forget_certs  # noqa: E402
from messages.models import Account  # noqa: E402
from tests.gmail_fake.server import GmailFake  # noqa: E402

BENCH_USERNAME = "bench-gmail-push"
AUDIENCE = "https://bench.example/gmail/push"
SERVICE_ACCOUNT = "gmail-push@bench.iam.gserviceaccount.com"
TARGET = "target@gmail.com"


def log(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


def notice(email: str, history_id: int) -> str:
    data = base64.b64encode(json.dumps({"emailAddress": email, "historyId": history_id}).encode())
    return json.dumps({"message": {"data": data.decode(), "messageId": "1"}, "subscription": "s"})


def seed(count: int) -> Account:
    owner = get_user_model().objects.create_user(BENCH_USERNAME)
    batch = 5000
    for start in range(0, count, batch):
        accounts = Account.objects.bulk_create(
            Account(owner=owner, provider="gmail", email_address=f"user{i}@gmail.com")
            for i in range(start, min(count, start + batch))
        )
        GmailSettings.objects.bulk_create(
            GmailSettings(account=a, history_id=1000) for a in accounts
        )
    target = Account.objects.create(owner=owner, provider="gmail", email_address=TARGET)
    GmailSettings.objects.create(account=target, history_id=1000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE mailstore_account")
    return target


def lookup_ms(email: str, repeat: int = 20) -> float:
    """Median execution time of the endpoint's lookup query (EXPLAIN ANALYZE)."""
    from gmail_sync.push import gmail_accounts_of_address, gmail_accounts_of_address_query

    qs = gmail_accounts_of_address_query(email)
    sql, params = qs.query.sql_with_params()
    times = []
    plan = ""
    with connection.cursor() as cursor:
        for _ in range(repeat):
            cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)
            result = cursor.fetchone()[0]
            result = json.loads(result) if isinstance(result, str) else result
            times.append(result[0]["Execution Time"])
            plan = result[0]["Plan"]
    assert gmail_accounts_of_address(email)  # the same query the endpoint runs finds it
    return statistics.median(times), _scan(plan)


def _scan(plan: dict) -> str:
    kinds = []

    def walk(node: dict) -> None:
        if "Scan" in node["Node Type"]:
            kinds.append(f"{node['Node Type']} on {node.get('Relation Name')}")
        for child in node.get("Plans", []):
            walk(child)

    walk(plan)
    return ", ".join(kinds)


def timed(client: Client, bodies: list[str], authorization: str, status: int) -> list[float]:
    times = []
    for body in bodies:
        started = time.perf_counter()
        response = client.post(
            "/gmail/push",
            data=body,
            content_type="application/json",
            headers={"Authorization": authorization},
        )
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == status, (response.status_code, response.content)
    return times


def row(name: str, times: list[float], extra: str = "") -> None:
    ordered = sorted(times)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    print(
        f"| {name} | {len(times)} | {statistics.median(times):.2f} | {p95:.2f} | {extra} |",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--pushes", type=int, default=500)
    args = parser.parse_args(argv)

    log("migrating")
    call_command("migrate", verbosity=0)
    settings.ALLOWED_HOSTS = ["testserver"]
    settings.GMAIL_PUSH_AUDIENCE = AUDIENCE
    settings.GMAIL_PUSH_SERVICE_ACCOUNT = SERVICE_ACCOUNT
    fake = GmailFake(https=False)
    settings.GMAIL_OIDC_CERTS_URL = fake.certs_url
    forget_certs()
    broker = syncstate.client()
    get_user_model().objects.filter(username=BENCH_USERNAME).delete()
    try:
        log(f"seeding {args.accounts} Gmail accounts")
        target = seed(args.accounts)
        with_index, plan_with = lookup_ms(TARGET)
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("DROP INDEX account_email_upper")
            without_index, plan_without = lookup_ms(TARGET)
            transaction.set_rollback(True)
        print(f"\nAddress lookup among {args.accounts + 1} Gmail accounts (EXPLAIN ANALYZE):\n")
        print("| index | median ms | plan |\n|---|---|---|")
        print(f"| account_email_upper | {with_index:.3f} | {plan_with} |")
        print(f"| none (dropped) | {without_index:.3f} | {plan_without} |")

        client = Client()
        token = fake.publisher.signer.token(AUDIENCE, SERVICE_ACCOUNT)
        bearer = f"Bearer {token}"
        broker.delete(topics.QUEUE_GMAIL, marker_key(TARGET), marker_key("nobody@gmail.com"))
        n = args.pushes
        print(f"\nPOST /gmail/push, {n} pushes each (ms per push, in-process request stack):\n")
        print("| push | n | median ms | p95 ms | result |\n|---|---|---|---|---|")
        new = timed(client, [notice(TARGET, 2000 + i) for i in range(n)], bearer, 204)
        queued = broker.llen(topics.QUEUE_GMAIL)
        row("new historyId (valid token)", new, f"{queued} tasks queued")
        broker.delete(topics.QUEUE_GMAIL)
        dup = timed(client, [notice(TARGET, 2000)] * n, bearer, 204)
        row("duplicate / older historyId", dup, f"{broker.llen(topics.QUEUE_GMAIL)} queued")
        GmailSettings.objects.filter(account=target).update(history_id=10**9)
        broker.delete(marker_key(TARGET))
        covered = timed(client, [notice(TARGET, 10**8 + i) for i in range(n)], bearer, 204)
        row("historyId the store covers", covered, f"{broker.llen(topics.QUEUE_GMAIL)} queued")
        unknown = timed(client, [notice("nobody@gmail.com", 5 + i) for i in range(n)], bearer, 204)
        row("unknown address", unknown, f"{broker.llen(topics.QUEUE_GMAIL)} queued")
        other = fake.publisher.signer.token("https://other.example/", SERVICE_ACCOUNT)
        refused = timed(client, [notice(TARGET, 3)] * n, f"Bearer {other}", 403)
        row("wrong audience (403)", refused, f"{broker.llen(topics.QUEUE_GMAIL)} queued")
        print(f"\nGoogle certificate fetches for {5 * n} pushes: {fake.certs_fetches}")
    finally:
        broker.delete(topics.QUEUE_GMAIL, marker_key(TARGET), marker_key("nobody@gmail.com"))
        get_user_model().objects.filter(username=BENCH_USERNAME).delete()
        fake.close()


if __name__ == "__main__":
    main()
