"""Gmail sync requests coalesce like IMAP's: a burst of pushes, or the poll next to them, is
one task on the queue; beat polls every active Gmail account."""

from __future__ import annotations

import pytest
import redis
from django.conf import settings
from django_celery_beat.models import PeriodicTask

from emailplatform import syncstate, topics
from gmail_sync.tasks import full_sync, poll_accounts
from messages.models import Account, DeadLetter


@pytest.fixture
def broker():
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.delete(topics.QUEUE_GMAIL)
    yield client
    client.delete(topics.QUEUE_GMAIL)


@pytest.mark.django_db(transaction=True)
def test_fifty_pushes_make_one_task(gmail_user, broker):
    account = gmail_user.account
    for _ in range(50):
        assert topics.publish_incremental_sync(account.pk, "gmail")
    poll_accounts()

    assert broker.llen(topics.QUEUE_GMAIL) == 1
    assert syncstate.queued_exists(account.pk, syncstate.ROUTE_INCREMENTAL)
    assert syncstate.wants(account.pk) == {syncstate.INCREMENTAL}


@pytest.mark.django_db(transaction=True)
def test_the_poll_skips_parked_accounts(gmail_user, broker):
    Account.objects.filter(pk=gmail_user.account.pk).update(status=Account.Status.AUTH_ERROR)
    assert poll_accounts() == 0
    assert broker.llen(topics.QUEUE_GMAIL) == 0


@pytest.mark.django_db  # before the transactional tests, which flush the seeded rows
def test_beat_polls_gmail_accounts_every_five_minutes():
    job = PeriodicTask.objects.get(task="gmail_sync.poll_accounts")
    assert job.enabled and job.queue == topics.QUEUE_GMAIL and job.interval.every == 5


@pytest.mark.django_db
def test_a_malformed_full_sync_payload_is_dead_lettered():
    result = full_sync.apply(args=[{"provider": "gmail"}]).get()

    letter = DeadLetter.objects.get(pk=result["deadLetter"])
    assert letter.task_name == "gmail_sync.full_sync" and "accountId" in letter.reason
