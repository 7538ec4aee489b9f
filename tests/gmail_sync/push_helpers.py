"""Helpers of the push and watch tests: Gmail accounts as a connect would store them, and the
tasks waiting on a queue of the test's own Redis database (what was really published)."""

from __future__ import annotations

import base64
import json

import redis
from django.conf import settings

from gmail_sync.models import GmailSettings
from messages.models import Account

TOPIC = "projects/test-project/topics/gmail"
AUDIENCE = "https://mail.example.org/gmail/push"
SERVICE_ACCOUNT = "gmail-push@test-project.iam.gserviceaccount.com"


def gmail_account(owner, email: str, refresh_token: str, **gmail_fields) -> Account:
    account = Account.objects.create(owner=owner, provider="gmail", email_address=email)
    account.set_credentials({"refresh_token": refresh_token})
    account.save()
    GmailSettings.objects.create(account=account, **gmail_fields)
    return account


def broker() -> redis.Redis:
    return redis.Redis.from_url(settings.CELERY_BROKER_URL)


def queued_tasks(queue: str = "gmail") -> list[tuple[str, list]]:
    """(task name, args) of every message on QUEUE, oldest first."""
    tasks = []
    for raw in reversed(broker().lrange(queue, 0, -1)):
        message = json.loads(raw)
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, _kwargs, _embed = json.loads(body)
        tasks.append((message["headers"]["task"], args))
    return tasks


def run_queued(queue: str = "gmail") -> list[tuple[str, list]]:
    """Take every task off QUEUE and run it here, as a worker would; what ran."""
    from emailplatform.celery import app

    ran = []
    client = broker()
    while (raw := client.rpop(queue)) is not None:
        message = json.loads(raw)
        args, kwargs, _ = json.loads(message["body"])
        name = message["headers"]["task"]
        app.tasks[name](*args, **kwargs)
        ran.append((name, args))
    return ran


def clear_queue(queue: str = "gmail") -> None:
    broker().delete(queue)
