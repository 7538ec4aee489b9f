"""A sync worker killed (kill -9) in the middle of a Gmail full sync: a new worker resumes it at
its checkpoint (the watchdog, once the account's lock expired) and the store ends equal to the
mailbox, nothing doubled. Production timeouts: lock TTL 30 s, watchdog every 15 s."""

from __future__ import annotations

import pytest
from django.db import connection

from emailplatform import topics
from gmail_sync.models import GmailSettings
from messages.models import Message, SyncRun
from tests.gmail_sync.factories import assert_store_matches_gmail
from tests.mailfactory import make_mail
from tests.worker import start_worker, stop_worker, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

COUNT = 300


def gmail_env(server) -> dict[str, str]:
    """The worker's settings pointed at the fake Gmail API; one message per batch request,
    slow enough to be killed mid-sync."""
    return {
        "GMAIL_CLIENT_ID": server.client_id,
        "GMAIL_CLIENT_SECRET": server.client_secret,
        "GMAIL_API_ENDPOINT": server.base_url + "/",
        "GMAIL_BATCH_URI": server.batch_uri,
        "GMAIL_TOKEN_URI": server.token_uri,
        "GMAIL_CA_CERTS": server.ca_certs,
        "GMAIL_BATCH_SIZE": "1",
        "GMAIL_QUOTA_UNITS_PER_SECOND": "100000",
    }


def test_worker_killed_mid_full_sync_then_restarted(gmail_user, tmp_path):
    box, account = gmail_user.box, gmail_user.account
    for i in range(COUNT):
        box.add_message(make_mail(f"m{i}", message_id=f"<m{i}@x>", minutes=i), ["INBOX"])
    log = tmp_path / "worker.log"
    env = gmail_env(gmail_user.server)
    stored = lambda: Message.objects.filter(account=account).count()  # noqa: E731
    try:
        worker = start_worker([topics.QUEUE_FULL_SYNC, topics.QUEUE_GMAIL], log, env, "solo")
        try:
            topics.publish_full_sync(account.pk, "gmail", {})
            wait_for(lambda: stored() >= 5, what="the sync under way", timeout=60, interval=0.01)
            worker.kill()
            worker.wait()
            assert stored() < COUNT, "killed mid-sync"
        finally:
            stop_worker(worker)
        box.delete(next(iter(box.messages)))  # a change while nobody syncs
        worker = start_worker([topics.QUEUE_FULL_SYNC, topics.QUEUE_GMAIL], log, env, "solo")
        try:
            settings = GmailSettings.objects.filter(account=account)
            wait_for(
                lambda: settings.get().history_id == box.history_id,
                timeout=150,
                what="the full sync resumed and finished",
            )
            running = SyncRun.objects.filter(account=account, status="running")
            wait_for(lambda: not running.exists(), timeout=30, what="the last pass to end")
            assert_store_matches_gmail(account, box)
            runs = list(SyncRun.objects.filter(account=account).order_by("started_at"))
            assert runs[0].status == "interrupted"
            gets = [c for c in gmail_user.server.calls if c.startswith("GET messages/")]
            assert len(gets) <= COUNT + 2  # what was stored before the kill is not fetched again
        finally:
            stop_worker(worker)
            connection.close()
    except AssertionError:
        print(log.read_text()[-20000:])
        raise
