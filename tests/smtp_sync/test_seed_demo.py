"""`make run`'s demo mailbox: its messages are APPENDed with their Date as the internal date,
so the mailbox sorts as a real inbox would."""

from __future__ import annotations

import os
from email.parser import BytesHeaderParser
from email.utils import parsedate_to_datetime

import pytest
from django.core.management import call_command
from imapclient import IMAPClient

from messages.models import Account
from smtp_sync.management.commands.seed_demo import DEMO_USER

pytestmark = pytest.mark.django_db


def test_the_demo_mailbox_has_realistic_internal_dates(django_user_model, dovecot):
    owner = django_user_model.objects.create_superuser("admin", "admin@localhost", "pw-admin-1")
    call_command("seed_demo", owner="admin")
    account = Account.objects.get(owner=owner, email_address="demo@example.com")
    password = account.get_credentials()["password"]
    with IMAPClient(
        os.environ["IMAP_TEST_HOST"], port=int(os.environ["IMAP_TEST_PORT"]), ssl=False
    ) as c:
        c.login(DEMO_USER, password)
        for folder in ("INBOX", "Archive"):
            c.select_folder(folder, readonly=True)
            fetched = c.fetch(c.search(["ALL"]), ["INTERNALDATE", "BODY.PEEK[HEADER]"])
            assert len(fetched) >= 3, folder
            internal = []
            for data in fetched.values():
                date = BytesHeaderParser().parsebytes(data[b"BODY[HEADER]"])["Date"]
                written = parsedate_to_datetime(str(date))
                got = data[b"INTERNALDATE"]  # naive, in local time (imapclient's default)
                got = got.astimezone() if got.tzinfo is None else got
                assert abs((got - written).total_seconds()) < 1, (folder, got, written)
                internal.append(got)
            assert len(set(internal)) == len(internal), "each message has its own date"
