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


def _quiet(account) -> bool:
    from emailplatform import syncstate

    broker = syncstate.client()
    return (
        not SyncRun.objects.filter(account=account, status="running").exists()
        and not syncstate.wants(account.pk)
        and not syncstate.client().exists(syncstate.lock_key(account.pk))
        and broker.llen(topics.QUEUE_FULL_SYNC) == broker.llen(topics.QUEUE_SMTP) == 0
    )


def test_database_connections_cut_mid_sync_are_retried(imap_account, imap_user, tmp_path):
    """PostgreSQL drops every connection (as in a restart) in the middle of a full sync: the
    task is retried within seconds and the sync completes, with nothing shortened."""
    count = 300
    imap_user.append(
        "INBOX", *[make_mail(f"d{i}", message_id=f"<d{i}@x>", minutes=i) for i in range(count)]
    )
    log = tmp_path / "worker.log"
    stored = lambda: Message.objects.filter(account=imap_account).count()  # noqa: E731
    worker = start_worker(
        [topics.QUEUE_FULL_SYNC, topics.QUEUE_SMTP], log, {"IMAP_FETCH_BATCH": "1"}, pool="solo"
    )
    try:
        topics.publish_full_sync(imap_account.pk, "imap", {})
        wait_for(lambda: stored() >= 5, what="the sync under way", timeout=60, interval=0.01)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            assert cursor.fetchone()[0] >= 1
        wait_for(lambda: stored() == count, timeout=120, what=f"{count} after the outage")
        wait_for(lambda: _quiet(imap_account), timeout=60, what="the sync to settle")
        assert_store_matches_server(imap_account, imap_user)
        imap_account.refresh_from_db()
        assert (imap_account.status, imap_account.last_error) == ("active", "")
        assert "retry 1 in" in log.read_text()
    except AssertionError:
        print(log.read_text()[-20000:])
        raise
    finally:
        stop_worker(worker)
        connection.close()


def test_ten_concurrent_triggers_make_at_most_two_runs(imap_account, imap_user, tmp_path):
    from django.utils import timezone

    imap_user.append("INBOX", *[make_mail(f"t{i}", message_id=f"<t{i}@x>") for i in range(50)])
    log = tmp_path / "worker.log"
    worker = start_worker([topics.QUEUE_FULL_SYNC, topics.QUEUE_SMTP], log, pool="solo")
    try:
        asked = timezone.now()
        for _ in range(5):
            topics.publish_sync(imap_account.pk, "imap", kind="full")
            topics.publish_sync(imap_account.pk, "imap", kind="incremental")
        stored = Message.objects.filter(account=imap_account)
        wait_for(lambda: stored.count() == 50, timeout=90, what="the sync")
        wait_for(lambda: _quiet(imap_account), timeout=60, what="the sync to settle")
        runs = list(SyncRun.objects.filter(account=imap_account).order_by("started_at"))
        assert 1 <= len(runs) <= 2
        assert runs[0].kind == "full"
        assert (runs[0].started_at - asked).total_seconds() < 15, "the full pass starts at once"
        assert_store_matches_server(imap_account, imap_user)
    except AssertionError:
        print(log.read_text()[-20000:])
        raise
    finally:
        stop_worker(worker)
        connection.close()
