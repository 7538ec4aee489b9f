"""The beat job that requests a full sync of every active account (messages.full_syncs_schedule)."""

import pytest
from kombu.exceptions import OperationalError

from emailplatform import syncstate, topics
from emailplatform.celery import app
from messages.models import Account
from messages.services import full_syncs_schedule

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def imap_accounts(user):
    accounts = [
        Account.objects.create(
            owner=user, provider=Account.Provider.IMAP, email_address=f"u{i}@example.com"
        )
        for i in range(3)
    ]
    yield accounts
    for account in accounts:
        syncstate.forget_account(account.pk)
        syncstate.client().delete(syncstate.queued_key(account.pk, syncstate.ROUTE_FULL))
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(topics.QUEUE_FULL_SYNC)


def test_a_broker_error_for_one_account_does_not_drop_the_others(imap_accounts, monkeypatch):
    first, broken, last = imap_accounts
    real_send = topics._send

    def send(task_name, args, queue):
        if args[0]["accountId"] == broken.pk:
            raise OperationalError("connection reset by broker")
        real_send(task_name, args, queue)

    monkeypatch.setattr(topics, "_send", send)

    assert full_syncs_schedule() == 2

    for account in (first, last):
        assert syncstate.wants(account.pk) == {syncstate.FULL}
        assert syncstate.queued_exists(account.pk, syncstate.ROUTE_FULL)
    # The failed one keeps its want and no queued marker: the watchdog enqueues it again.
    assert syncstate.wants(broken.pk) == {syncstate.FULL}
    assert not syncstate.queued_exists(broken.pk, syncstate.ROUTE_FULL)
