"""A real sync worker (its own process) with LOG_FORMAT=json: its sync's log lines carry the
account and sync run ids, and what it did shows on /metrics in the web process."""

from __future__ import annotations

import json

import pytest
from django.db import connection

from emailplatform import topics
from messages.models import Message, SyncRun
from tests.mailfactory import make_mail
from tests.worker import start_worker, stop_worker, wait_for

from .scrape import scrape, value

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sync_worker(tmp_path):
    log = tmp_path / "sync-worker.log"
    proc = start_worker(
        [topics.QUEUE_FULL_SYNC, topics.QUEUE_SMTP, topics.QUEUE_DEFAULT],
        log,
        {"LOG_FORMAT": "json", "INGEST_DELIVERY": "inline", "SYNC_WATCHDOG_SECONDS": "0"},
    )
    yield log
    stop_worker(proc)
    connection.close()


def json_lines(log) -> list[dict]:
    lines = []
    for line in log.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue  # Celery's start banner is printed, not logged
    return lines


def test_sync_logs_carry_ids_and_metrics_cross_processes(
    client, settings, imap_user, imap_account, sync_worker
):
    settings.METRICS_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    imap_user.append("INBOX", *(make_mail(f"m{i}", message_id=f"<m{i}@x>") for i in range(3)))
    before = scrape(client)

    topics.publish_full_sync(imap_account.pk, "imap")
    wait_for(
        lambda: SyncRun.objects.filter(account=imap_account, status="succeeded").exists(),
        timeout=60,
        what="the worker's full sync",
    )
    run = SyncRun.objects.get(account=imap_account, status="succeeded")
    assert Message.objects.filter(account=imap_account).count() == 3

    task = {"queue": topics.QUEUE_FULL_SYNC, "task": "smtp_sync.full_sync"}
    counted = "emailplatform_tasks_total"

    def task_counted() -> bool:
        samples = scrape(client)
        return value(samples, counted, **task, state="succeeded") > value(
            before, counted, **task, state="succeeded"
        )

    wait_for(task_counted, timeout=20, what="the task's count on /metrics")
    after = scrape(client)
    ingested = "emailplatform_messages_ingested_total"
    assert value(after, ingested, provider="imap") - value(before, ingested, provider="imap") == 3
    duration = "emailplatform_task_duration_seconds_count"
    assert value(after, duration, **task) - value(before, duration, **task) >= 1
    sync = "emailplatform_sync_duration_seconds_count"
    assert (
        value(after, sync, provider="imap", kind="full")
        - value(before, sync, provider="imap", kind="full")
        == 1
    )

    lines = json_lines(sync_worker)
    assert lines, sync_worker.read_text()[-3000:]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    sync_lines = [line for line in lines if line["logger"].startswith(("smtp_sync", "messages"))]
    assert sync_lines, [line["message"] for line in lines]
    assert all(line.get("account_id") == imap_account.pk for line in sync_lines), sync_lines
    with_run = [line for line in sync_lines if "sync_run_id" in line]
    assert with_run and all(line["sync_run_id"] == run.pk for line in with_run), sync_lines
    # The worker's own lines outside any task (start-up, "ready") name no account.
    assert any("account_id" not in line for line in lines)
