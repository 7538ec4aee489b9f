"""IDLE brings new mail into the store without any poll."""

import time

import pytest

from messages.models import Account, Message
from smtp_sync.idle import IdleSupervisor, IdleWatcher
from smtp_sync.services import imap_sync_account
from smtp_sync.sync import ImapAccountSync
from tests.mailfactory import make_mail
from tests.worker import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_idle_delivers_new_mail_into_the_store(imap_account, imap_user):
    ImapAccountSync(imap_account).sync()
    triggers = []

    def trigger(account_id):
        triggers.append(time.monotonic())
        imap_sync_account(account_id)

    watcher = IdleWatcher(imap_account.pk, trigger)
    watcher.start()
    try:
        wait_for(lambda: len(triggers) >= 1, what="the catch-up sync")
        time.sleep(0.5)  # IDLE is now held
        imap_user.append("INBOX", make_mail("pushed", message_id="<pushed@x>"))
        wait_for(
            lambda: Message.objects.filter(account=imap_account, subject="pushed").exists(),
            timeout=15,
            what="the pushed message",
        )
        assert len(triggers) >= 2
    finally:
        watcher.stop()
        watcher.join(timeout=40)


def test_supervisor_watches_idle_capable_accounts_of_its_shard(imap_account, imap_user):
    ImapAccountSync(imap_account).sync()  # records the server's capabilities (IDLE)
    mine = IdleSupervisor(lambda _id: None, shard=imap_account.pk % 2, shards=2)
    other = IdleSupervisor(lambda _id: None, shard=(imap_account.pk + 1) % 2, shards=2)
    assert mine.wanted_accounts() == {imap_account.pk}
    assert other.wanted_accounts() == set()
    Account.objects.filter(pk=imap_account.pk).update(status=Account.Status.PAUSED)
    assert mine.wanted_accounts() == set()


def test_a_burst_of_idle_notices_queues_one_incremental_sync(imap_account, settings):
    """The listener's trigger is coalesced at the queue: ten notices while no worker has taken
    the first task make one task, not ten."""
    import redis

    from emailplatform import syncstate, topics
    from smtp_sync.management.commands.imap_idle import idle_trigger

    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete(topics.QUEUE_SMTP)
    try:
        for _ in range(10):
            idle_trigger(imap_account.pk)
        assert broker.llen(topics.QUEUE_SMTP) == 1
        assert syncstate.INCREMENTAL in syncstate.wants(imap_account.pk)
    finally:
        broker.delete(topics.QUEUE_SMTP)
        syncstate.forget_account(imap_account.pk)
