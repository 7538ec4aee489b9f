"""A worker killed (kill -9) in the middle of a full sync: after a restart, the store matches the
server exactly, with no message lost or doubled."""

import pytest
from django.db import connection

from emailplatform import topics
from messages.models import Message
from tests.imap_fixtures import assert_store_matches_server
from tests.mailfactory import make_mail
from tests.worker import start_worker, stop_worker, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

COUNT = 400


def test_worker_killed_mid_sync_then_restarted(imap_account, imap_user, tmp_path):
    imap_user.append(
        "INBOX", *[make_mail(f"m{i}", message_id=f"<m{i}@x>", minutes=i) for i in range(COUNT)]
    )
    env = {
        "IMAP_FETCH_BATCH": "1",
        "CELERY_VISIBILITY_TIMEOUT": "5",
        "SYNC_LOCK_TTL_SECONDS": "10",
        "CELERY_UNACKED_RESTORE_INTERVAL": "1",
        "CELERY_UNACKED_RESTORE_THROTTLE": "1",
    }
    log = tmp_path / "worker.log"
    stored = lambda: Message.objects.filter(account=imap_account).count()  # noqa: E731
    try:
        worker = start_worker([topics.QUEUE_FULL_SYNC], log, env, pool="solo")
        try:
            topics.publish_full_sync(imap_account.pk, "imap", {})
            wait_for(lambda: stored() >= 5, what="the sync under way", timeout=60, interval=0.01)
            worker.kill()
            worker.wait()
            assert stored() < COUNT, "killed mid-sync"
        finally:
            stop_worker(worker)
        worker = start_worker([topics.QUEUE_FULL_SYNC], log, env, pool="solo")
        try:
            wait_for(lambda: stored() == COUNT, timeout=90, what=f"{COUNT} after restart")
            assert_store_matches_server(imap_account, imap_user)
        finally:
            stop_worker(worker)
            connection.close()
    except AssertionError:
        print(log.read_text()[-20000:])
        raise
