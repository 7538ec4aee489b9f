"""The one message an IDLE notice brings is stored in few round trips to PostgreSQL: each costs
the user's wait more than its statement's work (bench/ingest_one.py lists them)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from emailplatform import topics
from messages.batches import BatchPublisher
from messages.models import ChangeEvent, Folder, Message, MessageLocation, SyncRun
from tests.mailfactory import make_mail
from tests.sql_sent import statements_sent

pytestmark = pytest.mark.django_db

# Statement strings a one-message batch sends, publish to drain (BEGIN and COMMIT apart): the
# row, the account, the row locked, then the write with held statements riding along
# (messages.held_writes): 9 for a new message, 8 for a reply (bench/ingest_one.py lists them);
# it was 26. In a test the store's transaction is a savepoint of the test's: 2 more.
NEW_MESSAGE_CEILING = 9 + 2
REPLY_CEILING = 8 + 2


@pytest.fixture
def inbox(account):
    return Folder.objects.create(
        account=account, name="INBOX", display_name="INBOX", uidvalidity=7, role="inbox"
    )


def publish_one(account, inbox, raw, uid, run):
    publisher = BatchPublisher(account.pk, "imap", sync_run_id=run.pk, inline=None)
    item = topics.new_message_item(
        raw, folder="INBOX", uid=uid, flags=["\\Seen"], server_id=f"guid-{uid}"
    )
    with statements_sent() as sent:
        publisher.publish([item], fetched_at=timezone.now(), folder=inbox, uids=[uid])
        assert publisher.drain().lost == {}
    return sent


@pytest.fixture
def run(account):
    return SyncRun.objects.create(account=account, kind=SyncRun.Kind.INCREMENTAL)


def test_a_new_message_is_stored_in_few_round_trips(account, inbox, run, settings):
    settings.INGEST_DELIVERY = "queue"  # a batch this small: stored by its producer
    publish_one(account, inbox, make_mail("first", message_id="<first@x>"), 1, run)

    sent = publish_one(account, inbox, make_mail("second", message_id="<second@x>"), 2, run)

    message = Message.objects.get(account=account, message_id_header="<second@x>")
    assert message.is_read and message.server_ids == ["guid-2"]
    assert MessageLocation.objects.filter(message=message, folder=inbox, uid=2).exists()
    assert (message.thread.message_count, message.thread.subject) == (1, "second")
    assert ChangeEvent.objects.filter(object_type="message", object_id=message.pk).exists()
    run.refresh_from_db()
    assert run.created == 2
    assert len(sent) <= NEW_MESSAGE_CEILING, [s.sql[:200] for s in sent]


def test_a_reply_joins_its_thread_in_few_round_trips(account, inbox, run, settings):
    settings.INGEST_DELIVERY = "queue"
    publish_one(account, inbox, make_mail("question", message_id="<q@x>"), 1, run)

    reply = make_mail("Re: question", message_id="<r@x>", in_reply_to="<q@x>", minutes=5)
    sent = publish_one(account, inbox, reply, 2, run)

    question = Message.objects.get(account=account, message_id_header="<q@x>")
    answer = Message.objects.get(account=account, message_id_header="<r@x>")
    assert answer.thread_id == question.thread_id
    thread = answer.thread
    assert (thread.message_count, thread.subject, thread.last_message_at) == (
        2,
        "question",
        answer.sort_date,
    )
    assert len(sent) <= REPLY_CEILING, [s.sql[:200] for s in sent]
