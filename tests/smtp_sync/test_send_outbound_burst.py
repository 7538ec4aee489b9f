"""Bursts: one send task carrying many queued messages of one account
(messages.outbox_burst), sent over SMTP (aiosmtpd with fault injection) from an account whose
IMAP server is the real Dovecot."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from emailplatform import topics
from emailplatform.celery import app
from messages.events import ChangeEvent
from messages.models import Account, Message, OutboundMessage
from messages.outbox_burst import CHUNK, outbound_deliver_burst
from messages.outbox_dispatch import outbox_dispatch_many, outbox_sweep
from smtp_sync.outbound import SmtpOutboundSender
from tests.imap_fixtures import account_for, new_mail_server_user
from tests.messages.api.conftest import queued
from tests.outbound_factory import outbound_create, recipients_of
from tests.smtp_fake import SmtpBehaviour
from tests.smtp_sync import test_send_outbound as single
from tests.smtp_sync.test_send_outbound import due_now, fresh, sent_folder

pytestmark = pytest.mark.django_db(transaction=True)

SEND = topics.OUTBOUND_SEND_TASKS["imap"]
smtp_for = single.smtp_for
_smtp_queue_emptied = single._smtp_queue_emptied


def burst(outbounds: list[OutboundMessage]) -> dict:
    return app.tasks[SEND].apply(args=[[o.pk for o in outbounds]]).get()


def compose(account: Account, count: int, **kwargs) -> list[OutboundMessage]:
    return [outbound_create(account, to=[f"r{i}@example.net"], **kwargs) for i in range(count)]


def test_a_burst_sends_each_message_once_over_one_connection_with_its_copy(
    imap_account, imap_user, smtp_for, settings
):
    settings.OUTBOUND_SEND_PER_MINUTE = 2 * CHUNK  # more than one chunk, all in one minute
    server = smtp_for()
    outbounds = compose(imap_account, CHUNK + 5)
    first_event = ChangeEvent.objects.order_by("-pk").values_list("pk", flat=True).first()

    outcome = burst(outbounds)

    assert outcome == {"sent": CHUNK + 5}
    assert {fresh(o).state for o in outbounds} == {"sent"}
    received = sorted(m.rcpt_tos[0] for m in server.messages)
    assert received == sorted(f"r{i}@example.net" for i in range(CHUNK + 5))
    assert {m.connection for m in server.messages} == {1}
    for outbound in outbounds:
        assert sent_folder(imap_user, outbound) == [{"\\Seen"}]
        sent = fresh(outbound)
        assert recipients_of(sent)[sent.to[0]["address"]][:2] == ("accepted", 250)
        copy = Message.objects.get(pk=sent.sent_message_id)
        assert copy.message_id_header == outbound.message_id_header
        assert copy.locations.get().folder.name == "Sent"
    updated = set(
        ChangeEvent.objects.filter(pk__gt=first_event or 0, object_type="outbound").values_list(
            "object_id", flat=True
        )
    )
    assert updated == {o.pk for o in outbounds}


def test_a_burst_without_copies_in_sent(imap_account, imap_user, smtp_for):
    server = smtp_for()
    Account.objects.filter(pk=imap_account.pk).update(sync_settings={"saveSentCopy": False})
    outbounds = compose(Account.objects.get(pk=imap_account.pk), 4)

    assert burst(outbounds) == {"sent": 4}
    assert len(server.messages) == 4
    assert all(sent_folder(imap_user, o) == [] for o in outbounds)
    assert all(fresh(o).sent_message_id is None for o in outbounds)


def test_a_server_that_files_sent_mail_itself_gets_its_copies_found_and_stored(
    imap_account, imap_user, smtp_for
):
    """saveSentCopy false (as for Gmail's SMTP): the platform appends nothing; the copies the
    server filed in Sent are found after the burst, stored, and linked to their messages."""
    smtp_for()
    Account.objects.filter(pk=imap_account.pk).update(sync_settings={"saveSentCopy": False})
    account = Account.objects.get(pk=imap_account.pk)
    imap_user.append("Sent", b"Subject: not this one\r\nMessage-ID: <other@x>\r\n\r\nx\r\n")
    outbounds = compose(account, 3)

    class FilingServer(SmtpOutboundSender):
        def send(self, outbound, recipients):
            results = super().send(outbound, recipients)
            imap_user.append("Sent", bytes(outbound.raw), flags=("\\Seen",))
            return results

    sender = FilingServer(account)
    with sender.held():
        assert outbound_deliver_burst([o.pk for o in outbounds], sender) == {"sent": 3}

    for outbound in outbounds:
        assert sent_folder(imap_user, outbound) == [{"\\Seen"}]
        copy = Message.objects.get(pk=fresh(outbound).sent_message_id)
        assert copy.message_id_header == outbound.message_id_header
        assert copy.locations.get().folder.name == "Sent"


def test_one_refusal_in_a_burst_fails_only_that_message(imap_account, imap_user, smtp_for):
    server = smtp_for(SmtpBehaviour(rcpt_replies={"r1@example.net": "550 5.1.1 No such user"}))
    outbounds = compose(imap_account, 3)

    burst(outbounds)

    states = [fresh(o).state for o in outbounds]
    assert states == ["sent", "failed", "sent"]
    assert "550" in fresh(outbounds[1]).last_error
    assert sent_folder(imap_user, outbounds[1]) == []  # its copy deleted again
    assert sorted(m.rcpt_tos[0] for m in server.messages) == ["r0@example.net", "r2@example.net"]


def test_a_busy_server_stops_the_burst_and_nothing_is_lost(imap_account, imap_user, smtp_for):
    """The server says "too busy" at the second message: that one is retried later; the ones
    after it are not tried (no attempt counted) and wait as long; none is lost or doubled."""
    server = smtp_for(SmtpBehaviour(mail_replies=["", "451 4.3.0 Too busy, try later"]))
    outbounds = compose(imap_account, 4)

    outcome = burst(outbounds)

    assert outcome["sent"] == 1 and outcome["retry"] == 1 and outcome["waiting"] == 2
    rows = [fresh(o) for o in outbounds]
    assert [r.state for r in rows] == ["sent", "queued", "queued", "queued"]
    assert [r.attempts for r in rows] == [1, 1, 0, 0]
    assert "451" in rows[1].last_error
    assert rows[2].last_error.startswith("Not tried yet") and "451" in rows[2].last_error
    assert rows[2].next_attempt_at == rows[1].next_attempt_at
    assert all(sent_folder(imap_user, o) == [] for o in outbounds[1:])
    waiting = queued(topics.QUEUE_SMTP)
    assert (SEND, [[o.pk for o in outbounds[2:]]]) in waiting, waiting

    for outbound in outbounds[1:]:
        due_now(outbound)
    burst(outbounds[1:])

    assert {fresh(o).state for o in outbounds} == {"sent"}
    assert sorted(m.rcpt_tos[0] for m in server.messages) == [f"r{i}@example.net" for i in range(4)]
    assert all(sent_folder(imap_user, o) == [{"\\Seen"}] for o in outbounds)


def test_a_crash_in_the_middle_of_a_burst_sends_no_second_copy(imap_account, imap_user, smtp_for):
    """The worker dies after the server took the third message, before the burst recorded
    anything: those three stay `sending`; the sweeper makes them `unknown`; they are found in
    Sent and marked sent; the rest, never tried, are sent once."""
    server = smtp_for()
    outbounds = compose(imap_account, 5)

    class Killed(BaseException):
        pass

    class DyingSender(SmtpOutboundSender):
        sent = 0

        def send(self, outbound, recipients):
            results = super().send(outbound, recipients)
            DyingSender.sent += 1
            if DyingSender.sent == 3:
                raise Killed
            return results

    sender = DyingSender(Account.objects.get(pk=imap_account.pk))
    with pytest.raises(Killed), sender.held():
        outbound_deliver_burst([o.pk for o in outbounds], sender)
    assert [fresh(o).state for o in outbounds] == ["sending"] * 5

    later = timezone.now() + timedelta(seconds=settings.OUTBOX_SENDING_TIMEOUT_SECONDS + 1)
    assert outbox_sweep(now=later)["stuck"] == 5
    for outbound in outbounds:
        due_now(outbound)
    burst(outbounds)

    # The copies appended ahead for the last two prove they never went: queued again.
    rows = [fresh(o) for o in outbounds]
    assert [r.state for r in rows] == ["sent", "sent", "sent", "queued", "queued"]
    burst(outbounds[3:])

    rows = [fresh(o) for o in outbounds]
    assert [r.state for r in rows] == ["sent"] * 5
    assert sorted(m.rcpt_tos[0] for m in server.messages) == [f"r{i}@example.net" for i in range(5)]
    assert all(sent_folder(imap_user, o) == [{"\\Seen"}] for o in outbounds)


def test_a_sending_limit_holds_the_rest_of_a_burst(imap_account, imap_user, smtp_for):
    server = smtp_for()
    Account.objects.filter(pk=imap_account.pk).update(
        sync_settings={"sendPerMinute": 2, "sendPerDay": 100}
    )
    outbounds = compose(Account.objects.get(pk=imap_account.pk), 5)

    outcome = burst(outbounds)

    assert outcome == {"sent": 2, "waiting": 3}
    rows = [fresh(o) for o in outbounds]
    assert [r.state for r in rows] == ["sent", "sent", "queued", "queued", "queued"]
    assert [r.attempts for r in rows[2:]] == [0, 0, 0]
    assert len(server.messages) == 2
    assert (SEND, [[o.pk for o in outbounds[2:]]]) in queued(topics.QUEUE_SMTP)


def test_messages_composed_together_go_in_one_task_per_account(
    imap_account, user, dovecot, settings
):
    settings.OUTBOX_BURST_MAX = 3
    mine = compose(imap_account, 4)
    theirs = compose(account_for(user, new_mail_server_user(dovecot)), 2)
    rows = list(
        OutboundMessage.objects.select_related("account")
        .filter(pk__in=[o.pk for o in mine + theirs])
        .order_by("pk")
    )

    with transaction.atomic():
        assert outbox_dispatch_many(rows) == 6
        assert queued(topics.QUEUE_SMTP) == []  # only once committed

    tasks = queued(topics.QUEUE_SMTP)
    ids = [o.pk for o in mine]
    assert sorted(tasks, key=str) == sorted(
        [(SEND, [ids[:3]]), (SEND, [ids[3]]), (SEND, [[o.pk for o in theirs]])], key=str
    )
