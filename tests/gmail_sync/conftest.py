"""Fixtures of the Gmail provider's tests: a Gmail account in the store whose mailbox is the
local Gmail API's, and messages of that mailbox stored as a sync would store them."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from rest_framework.test import APIClient

from emailplatform import topics
from emailplatform.topics import IncomingMessage
from gmail_sync.ids import store_id
from gmail_sync.label_map import flags_of, folders_of
from gmail_sync.models import GmailSettings
from messages.folders import folders_by_name
from messages.ingest import messages_upsert
from messages.models import Account, Message
from tests.conftest import token_client
from tests.gmail_fake.mailbox import Mailbox
from tests.gmail_fake.mailbox import Message as FakeMessage
from tests.gmail_fake.server import GmailFake
from tests.messages.api.conftest import broker


@dataclass
class GmailAccount:
    account: Account
    box: Mailbox
    api: APIClient
    server: GmailFake


@pytest.fixture
def gmail_account(gmail_settings, user) -> GmailAccount:
    box, refresh_token = gmail_settings.add_user("alice@gmail.com")
    account = Account.objects.create(owner=user, provider="gmail", email_address=box.email)
    account.set_credentials({"refresh_token": refresh_token})
    account.save()
    GmailSettings.objects.create(account=account)
    folders_by_name(account, ["INBOX", "SENT", "TRASH", "SPAM", "STARRED"])
    return GmailAccount(account=account, box=box, api=token_client(user), server=gmail_settings)


def store(account: Account, message: FakeMessage) -> Message:
    """The fake's message in the store, as the sync stores it."""
    item = IncomingMessage(
        raw=message.raw,
        provider_id=store_id(message.id),
        provider_thread_id=store_id(message.thread_id),
        folders=folders_of(message.label_ids),
        flags=flags_of(message.label_ids),
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
