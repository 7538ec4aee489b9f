"""Configuration a deployer relies on: safe defaults, queues and routes, beat's seeded job."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client
from django_celery_beat.models import PeriodicTask

from emailplatform import topics
from emailplatform.celery import app

ROOT = Path(__file__).resolve().parents[2]


def run_settings(env_overrides: dict) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "SECRET_KEY")}
    env.update(env_overrides)
    code = "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'emailplatform.settings'); django.setup(); from django.conf import settings; print(settings.DEBUG)"  # noqa: E501
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )


def test_debug_is_off_and_a_secret_is_required_by_default():
    result = run_settings({})
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_debug_off_with_a_secret_starts():
    result = run_settings({"SECRET_KEY": "x" * 50})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_tasks_are_routed_to_their_queues():
    router = app.amqp.router
    assert router.route({}, topics.TASK_INGEST_NEW_MESSAGES)["queue"].name == "email_new_message"
    for task_name in topics.FULL_SYNC_TASKS.values():
        assert router.route({}, task_name)["queue"].name == "email_full_sync"
    declared = {q.name for q in app.conf.task_queues}
    assert {"email_full_sync", "email_new_message"} <= declared


def test_reliability_settings():
    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit


def test_a_queued_batch_costs_its_json_and_no_second_base64(settings):
    """kombu's Redis transport would base64 the JSON body (new mail is base64 already)."""
    import json

    import redis

    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    queue = "body-encoding-check"
    broker.delete(queue)
    try:
        marker = "x" * 100_000
        app.send_task("nothing.at_all", args=[{"raw": marker}], queue=queue)
        (stored,) = broker.lrange(queue, 0, -1)
        message = json.loads(stored)
        assert marker in message["body"]
        assert len(stored) < 1.1 * len(marker)
    finally:
        broker.delete(queue)


@pytest.mark.django_db
def test_beat_is_seeded_with_the_periodic_full_sync():
    job = PeriodicTask.objects.get(task=topics.TASK_SCHEDULE_FULL_SYNCS)
    assert job.enabled and job.interval.every > 0


@pytest.mark.django_db
def test_health_reports_database_and_broker():
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok"}
