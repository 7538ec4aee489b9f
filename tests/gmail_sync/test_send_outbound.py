"""Outbound messages sent through the Gmail API (the local Gmail API): the task
`gmail_sync.send_outbound` runs messages.outbox_delivery with the Gmail sender."""

from __future__ import annotations

import email
import email.policy
import time

import pytest
from django.utils import timezone

from emailplatform import topics
from emailplatform.celery import app
from gmail_sync import change_tasks  # noqa: F401  (registers gmail_sync.send_outbound)
from gmail_sync.ids import store_id
from messages import outbox_limits
from messages.models import Account, OutboundMessage
from messages.outbox_states import outbound_claim, outbound_unknown
from tests.gmail_fake.errors import BACKEND_ERROR
from tests.mailfactory import make_mail
from tests.messages.api.conftest import queued
from tests.outbound_factory import outbound_create, recipients_of

from .conftest import folder_names, store

pytestmark = pytest.mark.django_db(transaction=True)

SEND = topics.OUTBOUND_SEND_TASKS["gmail"]


def deliver(outbound: OutboundMessage) -> dict:
    return app.tasks[SEND].apply(args=[outbound.pk]).get()


def fresh(outbound: OutboundMessage) -> OutboundMessage:
    return OutboundMessage.objects.get(pk=outbound.pk)


def sent_in_gmail(box, outbound: OutboundMessage) -> list:
    return [
        m
        for m in box.messages.values()
        if email.message_from_bytes(m.raw, policy=email.policy.compat32)["Message-ID"]
        == outbound.message_id_header
    ]


def test_a_message_is_sent_once_and_its_copy_stored_in_sent(gmail_account, gmail_queue):
    outbound = outbound_create(
        gmail_account.account, to=["carol@example.net"], bcc=["dan@example.org"], subject="Plans"
    )

    outcome = deliver(outbound)

    outbound = fresh(outbound)
    assert outbound.state == "sent", outcome
    copies = sent_in_gmail(gmail_account.box, outbound)
    assert len(copies) == 1 and copies[0].label_ids == ["SENT"]
    assert recipients_of(outbound) == {
        "carol@example.net": ("accepted", 250, "accepted by Gmail"),
        "dan@example.org": ("accepted", 250, "accepted by Gmail"),
    }
    stored = outbound.sent_message
    assert stored is not None and stored.provider_id == store_id(copies[0].id)
    assert folder_names(stored) == ["SENT"] and stored.subject == "Plans"
    assert queued(gmail_queue) == []


def test_a_reply_is_sent_in_the_thread_of_the_message_it_answers(gmail_account, gmail_queue):
    first = gmail_account.box.add_message(
        make_mail("Lunch", message_id="<lunch@example.net>", sender="carol@example.net")
    )
    original = store(gmail_account.account, first)
    outbound = outbound_create(
        gmail_account.account, to=["carol@example.net"], subject="Re: Lunch", reply_to=original
    )

    deliver(outbound)

    outbound = fresh(outbound)
    [copy] = sent_in_gmail(gmail_account.box, outbound)
    assert copy.thread_id == first.thread_id
    assert outbound.sent_message.thread_id == original.thread_id


def test_a_server_error_leaves_it_unknown_until_gmail_is_searched(gmail_account, gmail_queue):
    """A 500 answer to messages.send: Gmail may have sent it. The next run searches
    rfc822msgid: (here Gmail had not sent it), queues it again, and it goes out once."""
    outbound = outbound_create(gmail_account.account, to=["carol@example.net"])
    gmail_account.server.fail_next(1, BACKEND_ERROR)

    assert "unknown" in deliver(outbound)

    unknown = fresh(outbound)
    assert unknown.state == "unknown" and "Gmail may have sent it" in unknown.last_error
    [(name, args)] = queued(gmail_queue)
    assert (name, args) == (SEND, [outbound.pk])
    OutboundMessage.objects.filter(pk=outbound.pk).update(next_attempt_at=timezone.now())
    assert deliver(outbound) == {"resolved": "absent"}
    assert fresh(outbound).state == "queued"
    [(name, args)] = queued(gmail_queue)
    deliver(outbound)
    assert fresh(outbound).state == "sent"
    assert len(sent_in_gmail(gmail_account.box, outbound)) == 1
    assert fresh(outbound).attempts == 2
    assert "GET messages" in gmail_account.server.calls  # the rfc822msgid: search


def test_an_unknown_message_that_gmail_sent_is_found_and_not_sent_again(gmail_account):
    outbound = outbound_create(gmail_account.account, to=["carol@example.net"])
    gmail_account.box.add_message(bytes(outbound.raw), ["SENT"])  # Gmail sent it; answer lost
    outbound_claim(outbound.pk)
    outbound_unknown(outbound.pk, "the connection was cut after the request")

    outcome = deliver(outbound)

    outbound = fresh(outbound)
    assert outcome["resolved"] == "found" and outbound.state == "sent"
    assert len(sent_in_gmail(gmail_account.box, outbound)) == 1
    assert outbound.sent_message is not None
    assert recipients_of(outbound)["carol@example.net"][0] == "accepted"


def test_a_rate_limit_is_retried_later_with_backoff(gmail_account, gmail_queue, settings):
    settings.GMAIL_MAX_RETRIES = 0
    outbound = outbound_create(gmail_account.account, to=["carol@example.net"])
    gmail_account.server.rate_limit_next(1)
    before = timezone.now()

    outcome = deliver(outbound)

    outbound = fresh(outbound)
    assert outbound.state == "queued" and outbound.attempts == 1, outcome
    delay = (outbound.next_attempt_at - before).total_seconds()
    base = settings.OUTBOUND_RETRY_BASE_SECONDS
    assert base * 0.5 <= delay <= base + 5
    assert "429" in outbound.last_error
    assert [name for name, _ in queued(gmail_queue)] == [SEND]
    assert sent_in_gmail(gmail_account.box, outbound) == []


def test_a_revoked_authorization_marks_the_account_and_holds_the_message(gmail_account):
    outbound = outbound_create(gmail_account.account, to=["carol@example.net"])
    refresh_token = gmail_account.account.get_credentials()["refresh_token"]
    gmail_account.server.tokens.revoke(refresh_token)

    deliver(outbound)

    outbound = fresh(outbound)
    account = Account.objects.get(pk=gmail_account.account.pk)
    assert outbound.state == "queued" and "connect the account again" in outbound.last_error
    assert outbound.last_error.startswith("Waiting for the account: ")
    assert account.status == "auth_error"
    assert sent_in_gmail(gmail_account.box, outbound) == []


def test_excess_over_the_sending_limit_waits_and_is_sent_later(
    gmail_account, gmail_queue, monkeypatch
):
    """Two a "minute" (a minute of one second here): five messages all go, two per window,
    none dropped, and a wait is no attempt."""
    monkeypatch.setattr(outbox_limits, "MINUTE_SECONDS", 1.0)
    account = gmail_account.account
    response = gmail_account.api.patch(
        f"/api/accounts/{account.pk}/", {"sync_settings": {"sendPerMinute": 2}}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["sync_settings"]["sendPerMinute"] == 2
    account.refresh_from_db()
    outbounds = [outbound_create(account, to=[f"r{i}@example.net"]) for i in range(5)]

    first = [deliver(o) for o in outbounds]
    assert sum("sent" in r for r in first) == 2
    assert sum("waiting" in r for r in first) == 3
    waiting = OutboundMessage.objects.filter(state="queued")
    assert waiting.count() == 3 and {o.attempts for o in waiting} == {0}
    rounds = 0
    while OutboundMessage.objects.filter(state="queued").exists():
        rounds += 1
        assert rounds < 10
        tasks = queued(gmail_queue)
        due = max(o.next_attempt_at for o in OutboundMessage.objects.filter(state="queued"))
        time.sleep(max(0.0, (due - timezone.now()).total_seconds()) + 0.05)
        for name, args in tasks:
            app.tasks[name].apply(args=args).get()

    assert OutboundMessage.objects.filter(state="sent").count() == 5
    assert {o.attempts for o in OutboundMessage.objects.all()} == {1}
    assert sum(len(sent_in_gmail(gmail_account.box, o)) for o in outbounds) == 5


def test_past_the_daily_limit_the_next_message_waits_for_a_free_slot(gmail_account, gmail_queue):
    account = gmail_account.account
    response = gmail_account.api.patch(
        f"/api/accounts/{account.pk}/",
        {"sync_settings": {"sendPerMinute": 0, "sendPerDay": 1}},
        format="json",
    )
    assert response.status_code == 200, response.content
    first, second = (outbound_create(account, to=["carol@example.net"]) for _ in range(2))

    assert "sent" in deliver(first)
    before = timezone.now()
    assert "waiting" in deliver(second)

    second = fresh(second)
    assert second.state == "queued" and second.attempts == 0
    wait = (second.next_attempt_at - before).total_seconds()
    assert 23.9 * 3600 < wait <= 24 * 3600 + 1
    assert sent_in_gmail(gmail_account.box, second) == []
