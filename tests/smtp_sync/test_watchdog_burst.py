"""The watchdog in a burst: tasks that wait in their queue longer than their queued marker
lives are not enqueued again (issue 10: 1,000 full syncs started by one beat job)."""

import pytest

from emailplatform import syncstate, topics
from emailplatform.celery import app
from messages.models import Account
from smtp_sync import watchdog

pytestmark = pytest.mark.django_db(transaction=True)


def purge() -> None:
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(topics.QUEUE_FULL_SYNC)


@pytest.fixture
def waiting_account(user):
    account = Account.objects.create(
        owner=user, provider=Account.Provider.IMAP, email_address="burst@example.com"
    )
    syncstate.epoch_is_new()  # not a Redis that just started: no catch-up round
    syncstate.want(account.pk, syncstate.FULL)  # requested; its queued marker has expired
    yield account
    syncstate.forget_account(account.pk)
    syncstate.client().delete(syncstate.queued_key(account.pk, syncstate.ROUTE_FULL))
    purge()


def test_a_want_is_enqueued_again_only_once_its_queue_is_drained(waiting_account):
    other = {"accountId": waiting_account.pk + 1, "provider": "imap", "options": {}}
    topics._send(topics.FULL_SYNC_TASKS["imap"], [other], topics.QUEUE_FULL_SYNC)

    assert watchdog.watchdog_tick()["requeued"] == []
    assert not syncstate.queued_exists(waiting_account.pk, syncstate.ROUTE_FULL)

    purge()  # the queue drained and the want is still there: its task was lost
    assert watchdog.watchdog_tick()["requeued"] == [waiting_account.pk]
    assert syncstate.queued_exists(waiting_account.pk, syncstate.ROUTE_FULL)
