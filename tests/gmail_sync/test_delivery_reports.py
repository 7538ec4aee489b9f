"""A DSN arriving in a Gmail mailbox reaches the outbound message through the full sync."""

from __future__ import annotations

import pytest

from gmail_sync.services import gmail_sync_account
from messages.models import DeliveryReport, OutboundRecipient
from tests.messages.test_delivery_reports import GOOD_STATUS, dsn
from tests.messages.test_report_matching import outbound

pytestmark = pytest.mark.django_db(transaction=True)


def test_gmail_sync_of_a_dsn_marks_the_recipient_bounced(gmail_user):
    sent = outbound(gmail_user.account)
    gmail_user.box.add_message(dsn(GOOD_STATUS), ["INBOX", "UNREAD"])
    gmail_sync_account(gmail_user.account.pk, full=True)
    bob = OutboundRecipient.objects.get(outbound=sent)
    assert (bob.status, bob.status_code) == ("bounced", "5.1.1")
    assert DeliveryReport.objects.get().matched_by == "envelope_id"
