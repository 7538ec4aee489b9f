"""Sending through the Gmail API: a new message and a reply reach Gmail (the local Gmail API)
in the right thread, and the store has the sent copy in that thread at once."""

from __future__ import annotations

import base64
import email
import email.policy

import pytest

from emailplatform.celery import app
from gmail_sync import change_tasks  # noqa: F401  (registers gmail_sync.send_message)
from gmail_sync.ids import store_id
from gmail_sync.send import gmail_send, gmail_send_request
from messages.models import Account, Message
from tests.mailfactory import make_mail
from tests.messages.api.conftest import queued

from .conftest import folder_names, store

pytestmark = pytest.mark.django_db(transaction=True)


def headers(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def test_a_new_message_is_sent_and_stored_in_sent(gmail_account):
    raw = make_mail("Plans", sender="alice@gmail.com", to="carol@example.net", body="Friday?\n")

    gmail_id, stored = gmail_send(gmail_account.account, raw)

    sent = gmail_account.box.get(gmail_id)
    assert sent.label_ids == ["SENT"]
    assert sent.thread_id == sent.id, "a thread of its own"
    assert stored.provider_id == store_id(gmail_id)
    assert stored.thread.provider_thread_id == store_id(sent.thread_id)
    assert folder_names(stored) == ["SENT"]
    assert stored.is_read and stored.subject == "Plans"
    sent_folder = stored.locations.get().folder_id
    listed = gmail_account.api.get(f"/api/messages/?folder={sent_folder}").json()
    assert [m["id"] for m in listed["results"]] == [stored.pk]


def test_a_reply_joins_the_thread_in_gmail_and_in_the_store(gmail_account):
    box = gmail_account.box
    first = box.add_message(
        make_mail("Lunch", message_id="<lunch@example.net>", sender="carol@example.net")
    )
    original = store(gmail_account.account, first)
    box.add_message(make_mail("Lunch", message_id="<other@example.net>"))  # same subject, no link

    raw = make_mail("Lunch", sender="alice@gmail.com", to="carol@example.net", body="Noon.\n")
    gmail_id, stored = gmail_send(gmail_account.account, raw, reply_to=original)

    sent = box.get(gmail_id)
    assert sent.thread_id == first.thread_id
    sent_headers = headers(sent.raw)
    assert sent_headers["In-Reply-To"] == "<lunch@example.net>"
    assert sent_headers["References"] == "<lunch@example.net>"
    assert sent_headers["Subject"] == "Re: Lunch"
    assert stored.thread_id == original.thread_id
    thread = gmail_account.api.get(f"/api/threads/{original.thread_id}/").json()
    assert thread["message_count"] == 2


def test_the_send_task_sends_a_queued_reply(gmail_account, gmail_queue):
    first = gmail_account.box.add_message(make_mail("Report", message_id="<report@x>"))
    original = store(gmail_account.account, first)

    gmail_send_request(
        gmail_account.account, make_mail("Report", to="bob@example.org"), reply_to=original
    )
    outcomes = [app.tasks[name].apply(args=args).get() for name, args in queued(gmail_queue)]

    assert len(outcomes) == 1 and "sent" in outcomes[0], outcomes
    stored = Message.objects.get(pk=outcomes[0]["messageId"])
    assert stored.thread_id == original.thread_id
    assert gmail_account.box.get(outcomes[0]["sent"]).thread_id == first.thread_id


def test_a_send_that_may_have_gone_is_never_repeated_and_shows_on_the_account(gmail_account):
    gmail_account.server.backend_error_next(1)
    raw = make_mail("Lost?", to="bob@example.org")

    outcome = change_tasks.send_message.apply(
        args=[gmail_account.account.pk, base64.b64encode(raw).decode()]
    ).get()

    assert "error" in outcome
    assert gmail_account.server.calls == ["POST messages/send"], "one try, no retry"
    account = Account.objects.get(pk=gmail_account.account.pk)
    assert "may not have been sent" in account.last_error
    assert account.status == Account.Status.ACTIVE


def test_a_send_refused_for_a_rate_limit_is_tried_again(gmail_account):
    gmail_account.server.rate_limit_next(2)

    gmail_id, stored = gmail_send(gmail_account.account, make_mail("Hi", to="bob@example.org"))

    sends = [c for c in gmail_account.server.calls if c == "POST messages/send"]
    assert len(sends) == 3
    assert len(gmail_account.box.messages) == 1 and stored is not None
