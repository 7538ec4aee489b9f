"""Fixtures of the Gmail provider's tests: a Gmail account in the store whose mailbox is the
local Gmail API's, and messages of that mailbox stored as a sync would store them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest
from rest_framework.test import APIClient

from emailplatform import topics
from emailplatform.topics import IncomingMessage
from gmail_sync.ids import store_id
from gmail_sync.labels import message_flags
from messages.folders import folders_by_name
from messages.ingest import messages_upsert
from messages.models import Account, Message
from tests.conftest import token_client
from tests.gmail_fake.mailbox import Mailbox
from tests.gmail_fake.mailbox import Message as FakeMessage
from tests.gmail_fake.server import GmailFake
from tests.gmail_sync.factories import gmail_account_create
from tests.messages.api.conftest import broker


@dataclass
class GmailAccount:
    account: Account
    box: Mailbox
    api: APIClient
    server: GmailFake


@pytest.fixture
def gmail_account(gmail_settings, user) -> GmailAccount:
    """An account that keeps SPAM and TRASH (as its IMAP path would: a trashed message stays,
    in the Trash folder), with the folders a full sync would have made."""
    box, refresh_token = gmail_settings.add_user("alice@gmail.com")
    account = gmail_account_create(user, refresh_token, box.email, include_spam_trash=True)
    folders_by_name(account, ["INBOX", "SENT", "TRASH", "SPAM", "STARRED"])
    return GmailAccount(account=account, box=box, api=token_client(user), server=gmail_settings)


def store(account: Account, message: FakeMessage) -> Message:
    """The fake's message in the store, as the sync stores it."""
    item = IncomingMessage(
        raw=message.raw,
        provider_id=store_id(message.id),
        provider_thread_id=store_id(message.thread_id),
        folders=sorted(set(message.label_ids) - {"UNREAD"}),
        flags=message_flags(message.label_ids),
    )
    result = messages_upsert(account=account, items=[item])
    return Message.objects.get(pk=result.message_ids[0])


def folder_names(message: Message) -> list[str]:
    return sorted(message.locations.values_list("folder__name", flat=True))


@pytest.fixture
def gmail_queue():
    """The gmail queue, empty before and after the test."""
    connection = broker()
    connection.delete(topics.QUEUE_GMAIL)
    yield topics.QUEUE_GMAIL
    connection.delete(topics.QUEUE_GMAIL)


@dataclass
class GmailUser:
    account: Account
    box: Mailbox
    server: GmailFake
    refresh_token: str


@pytest.fixture
def gmail_user(user, gmail_settings, settings) -> GmailUser:
    """A Gmail account in the store, and its mailbox on the fake Gmail API (an address of its
    own: parallel test processes share Redis, where each mailbox's quota bucket is)."""
    settings.GMAIL_QUOTA_UNITS_PER_SECOND = 100_000
    box, token = gmail_settings.add_user(f"alice-{uuid.uuid4().hex[:8]}@gmail.com")
    account = gmail_account_create(user, token, box.email)
    return GmailUser(account, box, gmail_settings, token)
