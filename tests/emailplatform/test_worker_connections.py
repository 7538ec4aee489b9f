"""A worker process keeps its database connection from one task to the next (CONN_MAX_AGE),
rather than paying a new one per task, and a connection PostgreSQL dropped meanwhile costs a
reconnect, not a failed task."""

import pytest
from django.db import connection
from django.utils import timezone

from emailplatform import topics
from messages.batches import BatchPublisher
from messages.models import Folder, MessageLocation
from tests.mailfactory import make_mail
from tests.worker import other_backends, start_worker, stop_worker

pytestmark = pytest.mark.django_db(transaction=True)


def store_one(publisher: BatchPublisher, folder: Folder, uid: int) -> None:
    item = topics.new_message_item(make_mail(f"m{uid}"), folder=folder.name, uid=uid)
    publisher.publish([item], fetched_at=timezone.now(), folder=folder, uids=[uid])
    assert publisher.drain().lost == {}


def test_a_message_worker_keeps_its_connection_across_tasks(account, settings, tmp_path):
    settings.INGEST_DELIVERY = "queue"
    inbox = Folder.objects.create(
        account=account, name="INBOX", display_name="INBOX", uidvalidity=1
    )
    worker = start_worker(
        [topics.QUEUE_NEW_MESSAGE],
        tmp_path / "worker.log",
        {"SYNC_WATCHDOG_SECONDS": "0", "CONN_MAX_AGE": "600"},
        pool="solo",
    )
    try:
        publisher = BatchPublisher(account.pk, "imap", inline=False)
        store_one(publisher, inbox, 1)
        after_first = other_backends()
        store_one(publisher, inbox, 2)
        after_second = other_backends()
        for pid in after_second:  # a connection the server closed under it
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        store_one(publisher, inbox, 3)
    finally:
        stop_worker(worker)
    assert len(after_first) == 1
    assert after_second == after_first
    uids = MessageLocation.objects.filter(folder=inbox).values_list("uid", flat=True)
    assert sorted(uids) == [1, 2, 3]
