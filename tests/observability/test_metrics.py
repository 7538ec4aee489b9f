"""/metrics: what Prometheus scrapes, who may scrape it, and that it moves with the platform."""

from __future__ import annotations

import pytest
from django.utils import timezone

from emailplatform import syncstate, topics
from emailplatform.celery import app
from emailplatform.observability import metrics, queues
from messages.account_status import account_mark_error
from messages.ingest import messages_upsert
from messages.models import Account, SyncRun
from messages.services import sync_run_finish, sync_run_start, sync_runs_interrupt
from tests.conftest import incoming
from tests.mailfactory import make_mail

from .scrape import scrape, value

pytestmark = pytest.mark.django_db


@pytest.fixture
def open_metrics(settings):
    """The test client's address (127.0.0.1) may scrape."""
    settings.METRICS_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    settings.METRICS_TOKEN = ""


# Who may scrape ---------------------------------------------------------------------------
def test_closed_unless_configured(client, settings):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_NETWORKS = []
    response = client.get("/metrics")
    assert response.status_code == 403
    assert b"METRICS_TOKEN" in response.content


def test_token_required_when_set(client, settings):
    settings.METRICS_TOKEN = "s3cret-scrape-token"
    settings.METRICS_ALLOWED_NETWORKS = []
    missing = client.get("/metrics")
    assert missing.status_code == 401
    assert missing["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    ok = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-scrape-token")
    assert ok.status_code == 200
    assert ok["Content-Type"].startswith("text/plain; version=")
    assert b"emailplatform_queue_depth" in ok.content


def test_allowed_network_needs_no_token(client, settings):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    assert client.get("/metrics").status_code == 403  # the client is 127.0.0.1
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::ffff:10.1.2.3").status_code == 200


def test_behind_a_proxy_the_forwarded_address_counts(client, settings):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    # The proxy runs on the same host: its own address must not open the door to everyone.
    outside = client.get("/metrics", HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert outside.status_code == 403
    inside = client.get("/metrics", HTTP_X_FORWARDED_FOR="198.51.100.1, 127.0.0.1")
    assert inside.status_code == 200


def test_a_wrong_allow_list_stops_the_start():
    import subprocess
    import sys

    from tests.worker import ROOT, process_env

    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=process_env({"METRICS_ALLOWED_NETWORKS": "10.0.0.0/33"}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "METRICS_ALLOWED_NETWORKS" in result.stderr


# What the series say -----------------------------------------------------------------------
def test_an_ingest_moves_the_messages_counter_and_the_accounts(
    client, open_metrics, account, django_capture_on_commit_callbacks
):
    before = scrape(client)
    mails = [make_mail(f"m{i}", message_id=f"<m{i}@x>") for i in range(3)]
    with django_capture_on_commit_callbacks(execute=True):
        messages_upsert(account=account, items=[incoming(m, folder="INBOX") for m in mails])
    after = scrape(client)
    name = "emailplatform_messages_ingested_total"
    assert value(after, name, provider="local") - value(before, name, provider="local") == 3
    assert value(after, "emailplatform_accounts", provider="local", status="active") == 1


def test_nothing_counted_for_a_rolled_back_ingest(
    client, open_metrics, account, django_capture_on_commit_callbacks
):
    from django.db import transaction

    before = scrape(client)
    with (
        django_capture_on_commit_callbacks(execute=True),
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        messages_upsert(account=account, items=[incoming(make_mail("x"), folder="INBOX")])
        raise RuntimeError("rolled back")
    after = scrape(client)
    name = "emailplatform_messages_ingested_total"
    assert value(after, name, provider="local") == value(before, name, provider="local")


def test_sync_duration_running_syncs_and_lag(
    client, open_metrics, account, django_capture_on_commit_callbacks
):
    Account.objects.filter(pk=account.pk).update(
        last_sync_at=timezone.now() - timezone.timedelta(hours=2)
    )
    run = sync_run_start(account=account, kind=SyncRun.Kind.FULL)
    during = scrape(client)
    assert value(during, "emailplatform_syncs_running", provider="local", kind="full") == 1
    assert value(during, "emailplatform_sync_lag_seconds", provider="local") >= 7200
    name = "emailplatform_sync_duration_seconds_count"
    with django_capture_on_commit_callbacks(execute=True):
        sync_run_finish(run=run)
    after = scrape(client)
    assert (
        value(after, name, provider="local", kind="full")
        - value(during, name, provider="local", kind="full")
        == 1
    )
    assert value(after, "emailplatform_syncs_running", provider="local", kind="full") == 0
    assert value(after, "emailplatform_sync_lag_seconds", provider="local") < 60
    outcome = {"provider": "local", "kind": "full", "outcome": "succeeded"}
    assert (
        value(after, "emailplatform_syncs_total", **outcome)
        - value(during, "emailplatform_syncs_total", **outcome)
        == 1
    )


def test_interrupted_and_failed_syncs_are_counted(
    client, open_metrics, account, django_capture_on_commit_callbacks
):
    before = scrape(client)
    with django_capture_on_commit_callbacks(execute=True):
        sync_run_finish(run=sync_run_start(account=account, kind="incremental"), error="boom")
        sync_run_start(account=account, kind="incremental")
        sync_runs_interrupt(account_id=account.pk, kinds=["incremental"])
    after = scrape(client)
    for outcome in ("failed", "interrupted"):
        labels = {"provider": "local", "kind": "incremental", "outcome": outcome}
        assert (
            value(after, "emailplatform_syncs_total", **labels)
            - value(before, "emailplatform_syncs_total", **labels)
            == 1
        )


def test_errors_by_kind(client, open_metrics, account, django_capture_on_commit_callbacks):
    before = scrape(client)
    with django_capture_on_commit_callbacks(execute=True):
        account_mark_error(account, "login refused", auth=True)
        account_mark_error(account, "server went away")
    after = scrape(client)
    for kind in ("auth", "account"):
        assert (
            value(after, "emailplatform_errors_total", kind=kind)
            - value(before, "emailplatform_errors_total", kind=kind)
            == 1
        )


def test_queue_depth_counts_waiting_tasks(client, open_metrics):
    before = scrape(client)
    for _ in range(2):
        app.send_task("messages.no_such_task", queue=topics.QUEUE_DEFAULT)
    app.send_task("messages.no_such_task", queue=topics.QUEUE_DEFAULT, priority=6)
    try:
        after = scrape(client)
    finally:
        for key in queues.priority_keys(topics.QUEUE_DEFAULT):
            syncstate.client().delete(key)
    depth = "emailplatform_queue_depth"
    queue = topics.QUEUE_DEFAULT
    assert value(after, depth, queue=queue) - value(before, depth, queue=queue) == 3
    assert ("emailplatform_queue_depth", (("queue", topics.QUEUE_NEW_MESSAGE),)) in after


def test_idle_connections_sum_live_listeners_only(client, open_metrics):
    import json
    import time

    syncstate.client().delete(metrics.IDLE_KEY)
    metrics.idle_connections_report(3, process="idle-a")
    metrics.idle_connections_report(2, process="idle-b")
    gone = json.dumps({"count": 7, "at": time.time() - metrics.IDLE_REPORT_MAX_AGE_SECONDS - 1})
    syncstate.client().hset(metrics.IDLE_KEY, "idle-dead", gone)
    samples = scrape(client)
    assert value(samples, "emailplatform_idle_connections") == 5
    assert not syncstate.client().hexists(metrics.IDLE_KEY, "idle-dead")
    syncstate.client().delete(metrics.IDLE_KEY)


def test_webhook_deliveries_series(client, open_metrics):
    before = scrape(client)
    metrics.webhook_delivery(outcome="delivered", seconds=0.2)
    metrics.webhook_delivery(outcome="failed", seconds=3.0)
    after = scrape(client)
    name = "emailplatform_webhook_deliveries_total"
    for outcome in ("delivered", "failed"):
        assert value(after, name, outcome=outcome) - value(before, name, outcome=outcome) == 1
    bucket = "emailplatform_webhook_delivery_seconds_bucket"
    assert (
        value(after, bucket, outcome="delivered", le="0.25")
        - value(before, bucket, outcome="delivered", le="0.25")
        == 1
    )
    assert value(after, bucket, outcome="failed", le="2.5") == value(
        before, bucket, outcome="failed", le="2.5"
    )


def test_redis_down_still_answers_with_the_database_series(client, open_metrics, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    samples = scrape(client)
    assert value(samples, "emailplatform_metrics_source_up", source="redis") == 0
    assert value(samples, "emailplatform_metrics_source_up", source="database") == 1
    assert value(samples, "emailplatform_dead_letters") == 0
