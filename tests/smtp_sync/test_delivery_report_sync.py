"""A DSN arriving in a mailbox reaches the outbound message through the ordinary sync."""

from __future__ import annotations

import pytest

from messages.models import Account, DeliveryReport, Message, OutboundRecipient
from smtp_sync.sync import ImapAccountSync
from tests.messages.test_delivery_reports import GOOD_STATUS, dsn
from tests.messages.test_report_matching import outbound

pytestmark = pytest.mark.django_db(transaction=True)


def test_imap_sync_of_a_dsn_marks_the_recipient_bounced(imap_account, imap_user):
    sent = outbound(imap_account)
    imap_user.append("INBOX", dsn(GOOD_STATUS))
    ImapAccountSync(Account.objects.get(pk=imap_account.pk)).sync(full=True)
    bob = OutboundRecipient.objects.get(outbound=sent)
    assert (bob.status, bob.status_code) == ("bounced", "5.1.1")
    report = DeliveryReport.objects.get()
    assert report.outbound == sent and bob.report_message == report.message
    # a second sync (the message is known) records nothing more
    ImapAccountSync(Account.objects.get(pk=imap_account.pk)).sync(full=True)
    assert DeliveryReport.objects.count() == 1
    assert Message.objects.filter(account=imap_account).count() == 1
