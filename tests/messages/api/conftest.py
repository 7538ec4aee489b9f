"""Fixtures of the client API tests: token clients for two users, and a small mailbox."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import redis
from django.conf import settings
from rest_framework.test import APIClient

from messages.ingest import messages_upsert
from messages.models import Account, Folder, Message
from tests.conftest import incoming, new_token, token_client  # noqa: F401 (re-exported)
from tests.mailfactory import make_mail

# A 1x1 transparent GIF.
PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)


@pytest.fixture
def api(user) -> APIClient:
    """Alice's client."""
    return token_client(user)


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", "bob@example.com", "pw-bob-123")


@pytest.fixture
def bob_api(bob) -> APIClient:
    return token_client(bob)


def ingest(account: Account, raw: bytes, folder: str = "INBOX", **meta) -> Message:
    result = messages_upsert(account=account, items=[incoming(raw, folder=folder, **meta)])
    return Message.objects.get(pk=result.message_ids[0])


@dataclass
class Mailbox:
    account: Account
    inbox: Folder
    archive: Folder
    hello: Message
    reply: Message
    report: Message
    archived: Message


@pytest.fixture
def mailbox(account) -> Mailbox:
    """Alice's local account: a two-message thread and a report in INBOX, one archived."""
    hello = ingest(
        account,
        make_mail("Lunch on Friday", message_id="<hello@x>", body="Shall we meet at noon?"),
        uid=1,
    )
    reply = ingest(
        account,
        make_mail(
            "Re: Lunch on Friday",
            message_id="<reply@x>",
            in_reply_to="<hello@x>",
            references=["<hello@x>"],
            sender="Carol Reply <carol@example.net>",
            body="Noon works.",
            minutes=30,
        ),
        uid=2,
        flags=["\\Seen"],
    )
    report = ingest(
        account,
        make_mail(
            "Quarterly report",
            message_id="<report@x>",
            sender="Dave Numbers <dave@example.org>",
            to="Alice <alice@example.com>, Erin <erin@example.com>",
            body="Figures attached.",
            minutes=60,
            attachments=[("q.pdf", "application/pdf", b"%PDF-1.4 quarterly")],
        ),
        uid=3,
        flags=["\\Flagged"],
    )
    archived = ingest(
        account,
        make_mail("Old newsletter", message_id="<news@x>", body="Archived long ago.", minutes=-600),
        folder="Archive",
        uid=1,
        flags=["\\Seen"],
    )
    return Mailbox(
        account=account,
        inbox=Folder.objects.get(account=account, name="INBOX"),
        archive=Folder.objects.get(account=account, name="Archive"),
        hello=hello,
        reply=reply,
        report=report,
        archived=archived,
    )


def broker() -> redis.Redis:
    return redis.Redis.from_url(settings.CELERY_BROKER_URL)


def queued(queue: str, *, empty: bool = True) -> list[tuple[str, list]]:
    """(task name, args) of the messages waiting on a queue, oldest first; the queue is emptied
    unless EMPTY is false.

    Kombu's Redis transport keeps a queue as a list, newest pushed left.
    """
    connection = broker()
    found = []
    for raw in reversed(connection.lrange(queue, 0, -1)):
        message = json.loads(raw)
        body = json.loads(_decode(message))
        found.append((message["headers"]["task"], body[0]))
    if empty:
        connection.delete(queue)
    return found


def _decode(message: dict) -> str:
    import base64

    if message.get("properties", {}).get("body_encoding") == "base64":
        return base64.b64decode(message["body"]).decode()
    return message["body"]


@pytest.fixture
def empty_queues():
    connection = broker()
    for name in ("default", "email_full_sync", "smtp", "gmail"):
        connection.delete(name)
    yield
    for name in ("default", "email_full_sync", "smtp", "gmail"):
        connection.delete(name)
