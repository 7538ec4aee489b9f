"""Helpers of the push and watch tests: Gmail accounts as a connect would store them, and the
tasks waiting on a queue of the test's own Redis database (what was really published)."""

from __future__ import annotations

import json

from messages.models import Account
from tests.gmail_sync.factories import gmail_account_create
from tests.messages.api.conftest import broker, queued

TOPIC = "projects/test-project/topics/gmail"
AUDIENCE = "https://mail.example.org/gmail/push"
SERVICE_ACCOUNT = "gmail-push@test-project.iam.gserviceaccount.com"


def gmail_account(owner, email: str, refresh_token: str, **gmail_fields) -> Account:
    return gmail_account_create(owner, refresh_token, email, **gmail_fields)


def queued_tasks(queue: str = "gmail") -> list[tuple[str, list]]:
    """(task name, args) of every message on QUEUE, oldest first; the queue keeps them."""
    return queued(queue, empty=False)


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
