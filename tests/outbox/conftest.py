"""Fixtures of the outbox tests: Alice's IMAP account (it can send), Bob's, a stored thread to
answer, and the provider queues read as Redis holds them."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from rest_framework.test import APIClient

from messages.models import Account, Message, OutboundMessage
from tests.conftest import new_token
from tests.mailfactory import make_mail
from tests.messages.api.conftest import (  # noqa: F401 (fixtures)
    bob,
    broker,
    empty_queues,
    ingest,
)


class CommittingClient(APIClient):
    """An API client whose every request runs what the request's transactions left for after
    their commit (a test's transaction never commits: pytest-django's rollback), as a real
    request would: the send task reaches Redis."""

    capture: Any = None

    def request(self, **kwargs: Any) -> Any:
        with self.capture(execute=True):
            return super().request(**kwargs)


def committing_client(user, capture) -> CommittingClient:
    client = CommittingClient()
    client.capture = capture
    client.credentials(HTTP_AUTHORIZATION=f"Token {new_token(user)}")
    return client


@pytest.fixture
def api(user, django_capture_on_commit_callbacks) -> CommittingClient:
    return committing_client(user, django_capture_on_commit_callbacks)


@pytest.fixture
def bob_api(bob, django_capture_on_commit_callbacks) -> CommittingClient:  # noqa: F811
    return committing_client(bob, django_capture_on_commit_callbacks)


@pytest.fixture
def sender(user) -> Account:
    """Alice's IMAP account: its provider sends (topics.OUTBOUND_SEND_TASKS)."""
    return Account.objects.create(
        owner=user,
        provider=Account.Provider.IMAP,
        email_address="alice@example.com",
        display_name="Alice Ünïcode",
    )


@pytest.fixture
def bob_sender(bob) -> Account:  # noqa: F811 (the fixture)
    return Account.objects.create(
        owner=bob, provider=Account.Provider.IMAP, email_address="bob@example.org"
    )


@pytest.fixture
def parent(sender) -> Message:
    """A stored message in Alice's INBOX, itself a reply: its References chain is long."""
    return ingest(
        sender,
        make_mail(
            "Lunch on Friday",
            message_id="<second@x>",
            in_reply_to="<first@x>",
            references=["<first@x>"],
            sender="Carol <carol@example.net>",
            to="Alice <alice@example.com>",
            body="Noon?",
            attachments=[("menu.pdf", "application/pdf", b"%PDF-1.4 menu")],
        ),
        uid=1,
    )


def waiting(queue: str) -> list[dict[str, Any]]:
    """The tasks waiting on a Redis queue, oldest first: name, args and ETA (None: at once)."""
    found = []
    for raw in reversed(broker().lrange(queue, 0, -1)):
        message = json.loads(raw)
        body = json.loads(message["body"])
        eta = message["headers"].get("eta")
        found.append(
            {
                "task": message["headers"]["task"],
                "args": body[0],
                "eta": datetime.fromisoformat(eta) if eta else None,
            }
        )
    return found


def send_tasks(queue: str = "smtp") -> list[list]:
    return [t["args"] for t in waiting(queue) if t["task"] == "smtp_sync.send_outbound"]


def outbound_count() -> int:
    return OutboundMessage.objects.count()
