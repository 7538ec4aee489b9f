"""The IMAP sync through the real queue: the sync publishes batches on `email_new_message`,
message worker processes store them, and the pass ends when they are stored."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from django.core.files.storage import default_storage
from django.db import connection

from emailplatform import topics
from messages.ingest import INGEST_LOCK_NAMESPACE
from messages.models import IngestBatch, Message, SyncRun
from smtp_sync.services import imap_sync_account
from tests.imap_fixtures import assert_store_matches_server
from tests.mailfactory import make_mail
from tests.worker import start_worker, stop_worker, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def queued(settings):
    settings.INGEST_DELIVERY = "queue"
    settings.INGEST_INLINE_MAX_MESSAGES = 0  # every batch through the queue, small ones too
    settings.IMAP_FETCH_BATCH = 5


@pytest.fixture
def workers(tmp_path):
    started: list = []

    def start(count: int = 1, **env: str):
        for _ in range(count):
            log = tmp_path / f"message-worker-{len(started)}.log"
            started.append((start_worker([topics.QUEUE_NEW_MESSAGE], log, env, pool="solo"), log))
        return [proc for proc, _ in started[-count:]]

    yield start
    for proc, _ in started:
        stop_worker(proc)
    connection.close()


def mails(count: int, prefix: str = "m") -> list[bytes]:
    return [make_mail(f"{prefix}{i}", message_id=f"<{prefix}{i}@x>") for i in range(count)]


def in_thread(function, *args, **kwargs):
    """Run FUNCTION in a thread with its own database connection; .join() gives its result."""
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = function(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001  (re-raised by result())
            outcome["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def result(timeout: float = 120):
        thread.join(timeout)
        assert not thread.is_alive(), "the sync did not finish"
        if "error" in outcome:
            raise outcome["error"]
        return outcome.get("value")

    return result


class AccountWriteBlocked:
    """Holds the account's ingest lock (the one a consumer takes to write), so that a consumer
    stops with its batch claimed, until released."""

    def __init__(self, account_id: int) -> None:
        import psycopg2

        settings = connection.settings_dict
        self.conn = psycopg2.connect(
            dbname=settings["NAME"],
            user=settings["USER"],
            password=settings["PASSWORD"],
            host=settings["HOST"],
            port=settings["PORT"],
        )
        self.conn.autocommit = True
        with self.conn.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s, %s)", [INGEST_LOCK_NAMESPACE, account_id])

    def release(self) -> None:
        self.conn.close()


def test_full_sync_through_two_message_workers(queued, workers, imap_account, imap_user):
    imap_user.append("INBOX", *mails(60))
    workers(2)
    report = imap_sync_account(imap_account.pk, full=True)
    # "done" means stored: nothing is left to consume when the pass returns.
    assert report.done and report.new == 60
    assert not IngestBatch.objects.exists()
    assert_store_matches_server(imap_account, imap_user)
    run = SyncRun.objects.get(account=imap_account, kind="full")
    assert (run.status, run.progress_done, run.progress_total) == ("succeeded", 60, 60)


def test_queued_batches_carry_their_mail_in_one_staged_blob_each(
    queued, workers, imap_account, imap_user
):
    """The queue carries references: each batch's mail is one blob in blob storage, named in
    its row, read by the consumer and deleted once the batch is stored."""
    imap_user.append("INBOX", *[make_mail(f"b{i}", body="x" * 3000) for i in range(12)])
    blocked = AccountWriteBlocked(imap_account.pk)
    workers(1)
    try:
        result = in_thread(imap_sync_account, imap_account.pk, full=True)
        wait_for(lambda: IngestBatch.objects.count() >= 2, timeout=60, what="batches published")
        rows = list(IngestBatch.objects.all())
        assert all(len(row.staged) == 1 for row in rows)
        assert all(default_storage.size(row.staged[0]) > 3000 * len(row.uids) for row in rows)
    finally:
        blocked.release()
    assert result().done
    assert_store_matches_server(imap_account, imap_user)
    assert default_storage.listdir("staged")[1] == []


def test_a_message_worker_killed_holding_a_batch(
    queued, settings, workers, imap_account, imap_user
):
    """Its batch's lease lapses; the sync fetches those messages again and another worker
    stores them; the killed worker's copy, redelivered later, changes nothing. (Lease 2 s
    here; the chaos suite runs this with the production 30 s.)"""
    settings.INGEST_LEASE_SECONDS = 2
    imap_user.append("INBOX", *mails(20))
    blocked = AccountWriteBlocked(imap_account.pk)
    (doomed,) = workers(1, INGEST_LEASE_SECONDS="2")
    try:
        result = in_thread(imap_sync_account, imap_account.pk, full=True)
        claimed = IngestBatch.objects.filter(claimed_at__isnull=False)
        wait_for(claimed.exists, timeout=60, what="a batch held by the worker")
        held = claimed.first()
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait()
    finally:
        blocked.release()
    workers(1, INGEST_LEASE_SECONDS="2")
    report = result()
    assert report.done
    assert not IngestBatch.objects.filter(pk=held.pk).exists(), "the lost batch is void"
    assert_store_matches_server(imap_account, imap_user)


def test_a_message_expunged_before_its_batch_is_stored(queued, workers, imap_account, imap_user):
    """Fetched, then expunged on the server while its batch waits: after the next sync (IDLE
    would trigger it) the store has it no more."""
    imap_user.append("INBOX", *mails(10))
    blocked = AccountWriteBlocked(imap_account.pk)
    workers(1)
    try:
        result = in_thread(imap_sync_account, imap_account.pk, full=True)
        wait_for(IngestBatch.objects.exists, timeout=60, what="batches published")
        with imap_user.client() as client:
            client.select_folder("INBOX")
            client.delete_messages(client.search(["SUBJECT", "m3"]))
            client.expunge()
    finally:
        blocked.release()
    assert result().done
    imap_sync_account(imap_account.pk)
    assert_store_matches_server(imap_account, imap_user)
    assert not Message.objects.filter(account=imap_account, subject="m3").exists()


def test_the_sync_never_has_more_batches_in_flight_than_its_bound(
    queued, settings, workers, imap_account, imap_user
):
    settings.INGEST_MAX_BATCHES_IN_FLIGHT = 2
    imap_user.append("INBOX", *mails(40))  # 8 batches of 5
    blocked = AccountWriteBlocked(imap_account.pk)
    workers(1)
    try:
        result = in_thread(imap_sync_account, imap_account.pk, full=True)
        wait_for(lambda: IngestBatch.objects.count() == 2, timeout=60, what="two in flight")
        seen = []
        for _ in range(20):
            seen.append(IngestBatch.objects.count())
            time.sleep(0.05)
    finally:
        blocked.release()
    assert result().done
    assert max(seen) == 2
    assert_store_matches_server(imap_account, imap_user)
