"""What users read and find once awkward mail is stored."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from messages.ingest import messages_upsert
from messages.message_page import MessageQuery, message_page
from messages.models import Message
from tests.conftest import incoming
from tests.mailfactory import make_mail
from tests.messages.test_mime_robustness import DSN

pytestmark = pytest.mark.django_db


def found(user, text: str) -> list[str]:
    rows = message_page(user_id=user.pk, query=MessageQuery(search=text))
    return [row["subject"] for row in rows]


def test_a_delivery_status_notification_shows_its_fields_and_is_found(user, account):
    messages_upsert(account=account, items=[incoming(DSN, folder="INBOX"), incoming(make_mail())])
    dsn = Message.objects.get(account=account, message_id_header="<dsn-1@mx.example.org>")
    assert "Final-Recipient: rfc822; nobody@example.net" in dsn.body_text
    assert dsn.snippet.startswith("Reporting-MTA: dns; mx.example.org")
    subject = "Undelivered Mail Returned to Sender"
    assert found(user, "nobody@example.net") == [subject]
    assert found(user, '"5.1.1" failed') == [subject]
    assert found(user, "env-42") == [subject]


def test_a_three_digit_year_sorts_the_message_where_it_belongs(account):
    raw = make_mail().replace(b"Date: ", b"Date: Tue, 2 Jan 101 09:00:00 +0000\r\nX-Was: ", 1)
    messages_upsert(account=account, items=[incoming(raw)])
    message = Message.objects.get(account=account)
    assert message.date == message.sort_date == datetime(2001, 1, 2, 9, 0, tzinfo=UTC)
