from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

from messages.models import Account
from tests.gmail_fake.mailbox import Mailbox
from tests.gmail_fake.server import GmailFake
from tests.gmail_sync.factories import gmail_account_create


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
