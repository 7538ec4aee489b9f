"""A worker killed (kill -9) in the middle of a full sync: after a restart, the store matches the
server exactly, with no message lost or doubled. With the production timeouts (lock TTL 30 s,
watchdog every 15 s, visibility timeout 2 hours): the watchdog resumes the work, not Redis'
re-delivery and not the poll."""

import itertools

import pytest
from django.db import connection

from emailplatform import topics
from messages.models import Message, SyncRun
from tests.imap_fixtures import assert_store_matches_server
from tests.mailfactory import make_mail
from tests.worker import start_worker, stop_worker, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

COUNT = 400


def test_worker_killed_mid_sync_then_restarted(imap_account, imap_user, tmp_path):
    imap_user.append(
        "INBOX", *[make_mail(f"m{i}", message_id=f"<m{i}@x>", minutes=i) for i in range(COUNT)]
    )
    env = {"IMAP_FETCH_BATCH": "1"}  # slow enough to be killed mid-sync; nothing shortened
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
            # Lock expiry (30 s) + seen missing at a tick + reaped at the next (15 s each).
            wait_for(lambda: stored() == COUNT, timeout=150, what=f"{COUNT} after restart")
            assert_store_matches_server(imap_account, imap_user)
            running = SyncRun.objects.filter(account=imap_account, status="running")
            wait_for(lambda: not running.exists(), timeout=30, what="the last pass to end")
            runs = list(SyncRun.objects.filter(account=imap_account).order_by("started_at"))
            assert runs[0].status == "interrupted"
            for before, after in itertools.pairwise(runs):
                assert before.finished_at <= after.started_at, "never two passes at once"
        finally:
            stop_worker(worker)
            connection.close()
    except AssertionError:
        print(log.read_text()[-20000:])
        raise
