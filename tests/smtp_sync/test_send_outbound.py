"""Outbound messages sent over SMTP (aiosmtpd with fault injection) from an account whose
IMAP server is the real Dovecot: the task `smtp_sync.send_outbound` runs
messages.outbox_delivery with the SMTP sender."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from emailplatform import topics
from emailplatform.celery import app
from messages.account_status import account_reactivate
from messages.models import Account, Message, OutboundMessage
from messages.outbox_delivery import account_wait_delay, outbound_deliver
from messages.outbox_dispatch import ACCOUNT_WAIT_PREFIX, outbox_sweep
from smtp_sync import tasks  # noqa: F401  (registers smtp_sync.send_outbound)
from smtp_sync.models import ImapSettings
from smtp_sync.outbound import SENDING_KEYWORD, SmtpOutboundSender
from smtp_sync.sync import ImapAccountSync
from tests.mailfactory import make_mail
from tests.messages.api.conftest import broker, queued
from tests.outbound_factory import outbound_create, recipients_of
from tests.smtp_fake import SmtpBehaviour

pytestmark = pytest.mark.django_db(transaction=True)

SEND = topics.OUTBOUND_SEND_TASKS["imap"]


@pytest.fixture(autouse=True)
def _smtp_queue_emptied():
    """Retries and waits are dispatched on the smtp queue (Redis): none is left for the next
    test."""
    broker().delete(topics.QUEUE_SMTP)
    yield
    broker().delete(topics.QUEUE_SMTP)


@pytest.fixture
def smtp_for(imap_account, imap_user, smtp_server):
    """Start an SMTP server (BEHAVIOUR) that knows the account's login, and point the
    account's SMTP settings at it."""

    def start(behaviour: SmtpBehaviour | None = None, *, password: str | None = None):
        server = smtp_server(behaviour, users={imap_user.username: password or imap_user.password})
        ImapSettings.objects.filter(account=imap_account).update(
            smtp_host=server.host, smtp_port=server.port, smtp_security="none"
        )
        return server

    return start


def deliver(outbound: OutboundMessage) -> dict:
    return app.tasks[SEND].apply(args=[outbound.pk]).get()


def fresh(outbound: OutboundMessage) -> OutboundMessage:
    return OutboundMessage.objects.get(pk=outbound.pk)


def due_now(outbound: OutboundMessage) -> None:
    OutboundMessage.objects.filter(pk=outbound.pk).update(next_attempt_at=timezone.now())


def sweeper_marks_stuck(outbound: OutboundMessage) -> None:
    """The outbox's beat sweeper, run once its timeout has passed since the attempt began (its
    worker died): the message becomes `unknown` and is dispatched again."""
    later = timezone.now() + timedelta(seconds=django_settings.OUTBOX_SENDING_TIMEOUT_SECONDS + 1)
    assert outbox_sweep(now=later)["stuck"] == 1
    assert fresh(outbound).state == "unknown"
    due_now(outbound)  # the sweep ran "later": its check is due


def sent_folder(imap_user, outbound: OutboundMessage) -> list[set[str]]:
    """The flags of each copy of OUTBOUND in the server's Sent folder."""
    with imap_user.client() as c:
        c.select_folder("Sent", readonly=True)
        uids = c.search(["HEADER", "Message-ID", outbound.message_id_header])
        return [{f.decode() for f in d[b"FLAGS"]} for d in c.fetch(uids, ["FLAGS"]).values()]


def test_a_reply_is_sent_once_with_dsn_and_lands_in_sent_and_its_thread(
    imap_account, imap_user, smtp_for
):
    server = smtp_for()
    imap_user.append(
        "INBOX", make_mail("Lunch", message_id="<lunch@example.net>", sender="bob@example.net")
    )
    ImapAccountSync(Account.objects.get(pk=imap_account.pk)).sync(full=True)
    original = Message.objects.get(account=imap_account, message_id_header="<lunch@example.net>")
    outbound = outbound_create(
        imap_account,
        to=["bob@example.net"],
        bcc=["eve@example.org"],
        subject="Re: Lunch",
        reply_to=original,
    )

    outcome = deliver(outbound)

    outbound = fresh(outbound)
    assert outbound.state == "sent", outcome
    [received] = server.messages
    assert received.mail_from == imap_account.email_address
    assert received.rcpt_tos == ["bob@example.net", "eve@example.org"]
    assert received.mail_param("ENVID") == outbound.envelope_id
    assert received.mail_param("RET") == "HDRS"
    assert received.rcpt_param("bob@example.net", "NOTIFY") == "FAILURE,DELAY"
    assert b"eve@example.org" not in received.data
    assert recipients_of(outbound)["bob@example.net"][:2] == ("accepted", 250)
    assert sent_folder(imap_user, outbound) == [{"\\Seen"}]
    copy = outbound.sent_message
    assert copy is not None and copy.thread_id == original.thread_id
    assert list(copy.locations.values_list("folder__name", flat=True)) == ["Sent"]
    assert copy.is_read
    ImapAccountSync(Account.objects.get(pk=imap_account.pk)).sync()
    mine = Message.objects.filter(message_id_header=outbound.message_id_header)
    assert list(mine.values_list("pk", flat=True)) == [copy.pk], "the sync finds it stored"


def test_notify_success_is_asked_when_the_message_wants_it(imap_account, smtp_for):
    server = smtp_for()
    outbound = outbound_create(imap_account, to=["bob@example.net"], notify_success=True)

    deliver(outbound)

    assert server.messages[0].rcpt_param("bob@example.net", "NOTIFY") == "SUCCESS,FAILURE,DELAY"


def test_a_4xx_is_retried_later_and_delivered_once(imap_account, imap_user, smtp_for):
    server = smtp_for(SmtpBehaviour(data_replies=["451 4.3.0 Try again later"]))
    outbound = outbound_create(imap_account, to=["bob@example.net"])

    first = deliver(outbound)

    waiting = fresh(outbound)
    assert waiting.state == "queued" and waiting.attempts == 1, first
    assert "451" in waiting.last_error and waiting.next_attempt_at > timezone.now()
    assert sent_folder(imap_user, outbound) == [], "no copy in Sent for a message not sent"
    due_now(outbound)
    deliver(outbound)
    assert fresh(outbound).state == "sent"
    assert len(server.messages) == 1
    assert sent_folder(imap_user, outbound) == [{"\\Seen"}]


def test_a_5xx_for_one_of_two_recipients_sends_to_the_other(imap_account, smtp_for):
    server = smtp_for(SmtpBehaviour(rcpt_replies={"carol@example.net": "550 5.1.1 No such user"}))
    outbound = outbound_create(imap_account, to=["bob@example.net", "carol@example.net"])

    deliver(outbound)

    assert fresh(outbound).state == "sent"
    assert server.messages[0].rcpt_tos == ["bob@example.net"]
    status = recipients_of(outbound)
    assert status["bob@example.net"][:2] == ("accepted", 250)
    assert status["carol@example.net"][:2] == ("rejected", 550)
    assert "No such user" in status["carol@example.net"][2]


def test_a_recipient_refused_for_now_is_retried_alone(imap_account, imap_user, smtp_for):
    server = smtp_for(SmtpBehaviour(rcpt_replies={"carol@example.net": ["450 4.2.1 Mailbox busy"]}))
    outbound = outbound_create(imap_account, to=["bob@example.net", "carol@example.net"])

    deliver(outbound)
    assert fresh(outbound).state == "queued"
    assert recipients_of(outbound)["carol@example.net"][:2] == ("pending", 450)
    due_now(outbound)
    deliver(outbound)

    assert fresh(outbound).state == "sent"
    assert [m.rcpt_tos for m in server.messages] == [["bob@example.net"], ["carol@example.net"]]
    assert {s for s, _, _ in recipients_of(outbound).values()} == {"accepted"}
    assert sent_folder(imap_user, outbound) == [{"\\Seen"}]


def test_a_permanent_refusal_fails_at_once(imap_account, imap_user, smtp_for):
    server = smtp_for(SmtpBehaviour(data_replies="554 5.7.1 Rejected as spam"))
    outbound = outbound_create(imap_account, to=["bob@example.net"])

    deliver(outbound)

    outbound = fresh(outbound)
    assert outbound.state == "failed" and outbound.attempts == 1
    assert "554" in outbound.last_error and "Rejected as spam" in outbound.last_error
    assert server.messages == [] and sent_folder(imap_user, outbound) == []


def test_a_refused_login_marks_the_account_and_holds_the_message_until_it_is_back(
    imap_account, imap_user, smtp_for
):
    """The password changed on the server: the message is not failed but waits, shown why,
    without logging in again while the account is parked; once the login works again (the
    watchdog's re-test reactivates the account) it comes due at once and is sent."""
    refusing = smtp_for(password="not-the-password")
    outbound = outbound_create(imap_account, to=["bob@example.net"])

    deliver(outbound)

    outbound = fresh(outbound)
    account = Account.objects.get(pk=imap_account.pk)
    assert account.status == "auth_error" and "login refused" in account.last_error
    assert outbound.state == "queued" and outbound.attempts == 1
    assert outbound.last_error.startswith(ACCOUNT_WAIT_PREFIX)
    assert "login refused" in outbound.last_error
    assert refusing.messages == []
    assert queued(topics.QUEUE_SMTP) == [(SEND, [outbound.pk])]

    due_now(outbound)
    outcome = deliver(outbound)
    outbound = fresh(outbound)
    assert "waiting for the account" in outcome and outbound.attempts == 1
    assert outbound.next_attempt_at > timezone.now() + timedelta(seconds=50)
    assert queued(topics.QUEUE_SMTP) == [(SEND, [outbound.pk])]

    accepting = smtp_for()
    assert account_reactivate(account)
    assert fresh(outbound).next_attempt_at <= timezone.now()
    assert queued(topics.QUEUE_SMTP) == [(SEND, [outbound.pk])]
    deliver(outbound)

    outbound = fresh(outbound)
    assert outbound.state == "sent" and outbound.last_error == ""
    assert [m.rcpt_tos for m in accepting.messages] == [["bob@example.net"]]


def test_a_paused_account_holds_its_queue_and_resuming_sends_it(imap_account, smtp_for):
    server = smtp_for()
    outbound = outbound_create(imap_account, to=["bob@example.net"])
    Account.objects.filter(pk=imap_account.pk).update(status=Account.Status.PAUSED)

    deliver(outbound)

    outbound = fresh(outbound)
    assert outbound.state == "queued" and outbound.attempts == 0
    assert outbound.last_error == ACCOUNT_WAIT_PREFIX + "it is paused; resume it to send"
    assert server.messages == []
    queued(topics.QUEUE_SMTP)

    account = Account.objects.get(pk=imap_account.pk)
    account.status = Account.Status.ACTIVE
    account.save(update_fields=["status"])
    assert queued(topics.QUEUE_SMTP) == [(SEND, [outbound.pk])]
    deliver(outbound)

    assert fresh(outbound).state == "sent" and len(server.messages) == 1


def test_a_message_held_longer_than_the_wait_fails_with_the_reason(imap_account, smtp_for):
    server = smtp_for()
    outbound = outbound_create(imap_account, to=["bob@example.net"])
    waited = timedelta(seconds=django_settings.OUTBOUND_ACCOUNT_WAIT_GIVE_UP_SECONDS + 60)
    OutboundMessage.objects.filter(pk=outbound.pk).update(queued_at=timezone.now() - waited)
    Account.objects.filter(pk=imap_account.pk).update(
        status=Account.Status.AUTH_ERROR, last_error="535 login refused"
    )

    deliver(outbound)

    outbound = fresh(outbound)
    assert outbound.state == "failed" and "could not send for 3 days" in outbound.last_error
    assert "535 login refused" in outbound.last_error and server.messages == []


def test_a_held_message_is_looked_at_again_less_often_the_longer_it_waits():
    assert account_wait_delay(timedelta(seconds=10)) == timedelta(minutes=1)
    assert account_wait_delay(timedelta(minutes=20)) == timedelta(minutes=5)
    assert account_wait_delay(timedelta(days=2)) == timedelta(minutes=15)


def test_a_server_that_hangs_times_out_with_a_reason_and_frees_the_worker(
    imap_account, smtp_for, settings
):
    settings.SMTP_TIMEOUT_SECONDS = 1.0
    smtp_for(SmtpBehaviour(hang_at="MAIL"))
    outbound = outbound_create(imap_account, to=["bob@example.net"])

    started = time.monotonic()
    deliver(outbound)

    assert time.monotonic() - started < 10
    outbound = fresh(outbound)
    assert outbound.state == "queued" and "no reply" in outbound.last_error


def test_a_crash_after_the_server_accepted_does_not_send_a_second_copy(
    imap_account, imap_user, smtp_for, settings
):
    """The worker dies after the server took the message, before the state was saved: the
    message stays `sending`; the sweeper makes it `unknown`; the next run finds it in Sent
    and marks it sent. The server has exactly one copy."""
    server = smtp_for()
    outbound = outbound_create(imap_account, to=["bob@example.net"])

    class Killed(BaseException):
        pass

    class DyingSender(SmtpOutboundSender):
        def send(self, outbound, recipients):
            super().send(outbound, recipients)
            raise Killed

    with pytest.raises(Killed):
        outbound_deliver(outbound.pk, DyingSender(Account.objects.get(pk=imap_account.pk)))
    assert fresh(outbound).state == "sending"
    sweeper_marks_stuck(outbound)

    outcome = deliver(outbound)

    outbound = fresh(outbound)
    assert outcome.get("resolved") == "found" and outbound.state == "sent"
    assert len(server.messages) == 1
    assert sent_folder(imap_user, outbound) == [{"\\Seen"}]
    assert outbound.sent_message is not None
    ImapAccountSync(Account.objects.get(pk=imap_account.pk)).sync(full=True)
    mine = Message.objects.filter(message_id_header=outbound.message_id_header)
    assert list(mine.values_list("pk", flat=True)) == [outbound.sent_message_id]


def test_a_crash_before_the_smtp_transaction_is_resolved_as_not_sent(
    imap_account, imap_user, smtp_for, settings
):
    server = smtp_for()
    outbound = outbound_create(imap_account, to=["bob@example.net"])

    class Killed(BaseException):
        pass

    class DyingSender(SmtpOutboundSender):
        def send(self, outbound, recipients):
            raise Killed

    with pytest.raises(Killed):
        outbound_deliver(outbound.pk, DyingSender(Account.objects.get(pk=imap_account.pk)))
    sweeper_marks_stuck(outbound)

    assert deliver(outbound) == {"resolved": "absent"}
    due_now(outbound)
    deliver(outbound)
    assert fresh(outbound).state == "sent" and len(server.messages) == 1


def test_a_cut_after_data_is_never_resent_blindly(imap_account, imap_user, smtp_for, settings):
    """The server kept the message but its answer never came: `unknown`, the copy in Sent
    not confirmed, so the outcome cannot be told: checked again, then failed with a reason
    that says it may have gone. Never a second copy."""
    server = smtp_for(SmtpBehaviour(after_data="cut"))
    outbound = outbound_create(imap_account, to=["bob@example.net"])

    deliver(outbound)
    unknown = fresh(outbound)
    assert unknown.state == "unknown"
    assert [SENDING_KEYWORD in flags for flags in sent_folder(imap_user, outbound)] == [True]
    due_now(outbound)
    assert deliver(outbound) == {"unknown": "cannot tell yet"}
    assert fresh(outbound).state == "unknown"
    settings.OUTBOUND_UNKNOWN_GIVE_UP_SECONDS = 0
    due_now(outbound)
    deliver(outbound)

    outbound = fresh(outbound)
    assert outbound.state == "failed" and "may have accepted" in outbound.last_error
    assert len(server.messages) == 1


def test_a_burst_of_messages_goes_over_one_connection(imap_account, imap_user, smtp_for):
    server = smtp_for()
    outbounds = [outbound_create(imap_account, to=[f"r{i}@example.net"]) for i in range(3)]

    for outbound in outbounds:
        deliver(outbound)

    assert {fresh(o).state for o in outbounds} == {"sent"}
    assert [m.connection for m in server.messages] == [1, 1, 1]
    assert all(sent_folder(imap_user, o) == [{"\\Seen"}] for o in outbounds)


def test_transient_failures_give_up_after_the_attempt_limit(
    imap_account, imap_user, smtp_for, settings
):
    settings.OUTBOUND_MAX_ATTEMPTS = 2
    server = smtp_for(SmtpBehaviour(mail_replies="421 4.7.0 Too busy, try later"))
    outbound = outbound_create(imap_account, to=["bob@example.net"])

    deliver(outbound)
    assert fresh(outbound).state == "queued"
    due_now(outbound)
    deliver(outbound)

    outbound = fresh(outbound)
    assert outbound.state == "failed" and outbound.attempts == 2
    assert (
        outbound.last_error.startswith("gave up after 2 attempts") and "421" in outbound.last_error
    )
    assert server.messages == [] and sent_folder(imap_user, outbound) == []


def test_a_crash_while_retrying_some_recipients_is_not_taken_for_sent(
    imap_account, imap_user, smtp_for
):
    """Bob got the message, Carol's server said "later"; the worker dies during Carol's
    retry: the copy in Sent (Bob's proof) does not make Carol's attempt look delivered."""
    smtp_for(SmtpBehaviour(rcpt_replies={"carol@example.net": ["450 4.2.1 Mailbox busy"]}))
    outbound = outbound_create(imap_account, to=["bob@example.net", "carol@example.net"])
    deliver(outbound)
    due_now(outbound)

    class Killed(BaseException):
        pass

    class DyingSender(SmtpOutboundSender):
        def send(self, outbound, recipients):
            self._copy_before_sending(outbound, bytes(outbound.raw))
            raise Killed

    with pytest.raises(Killed):
        outbound_deliver(outbound.pk, DyingSender(Account.objects.get(pk=imap_account.pk)))
    sweeper_marks_stuck(outbound)
    due_now(outbound)

    assert deliver(outbound) == {"unknown": "cannot tell yet"}
    assert recipients_of(outbound)["carol@example.net"][0] == "pending"
    assert fresh(outbound).state == "unknown"
