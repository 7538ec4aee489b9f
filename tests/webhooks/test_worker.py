"""End to end with a real webhook worker on its own queue: a committed change reaches the
receiver with no call but the commit (the nudge), and beat's sweep retries what is due."""

from __future__ import annotations

import pytest
from django.db import transaction

from emailplatform import topics
from messages.events import events_record
from tests.worker import start_worker, stop_worker, wait_for
from webhooks import dispatch
from webhooks.models import WebhookDelivery
from webhooks.services import endpoint_create
from webhooks.tasks import sweep


@pytest.mark.django_db(transaction=True)
def test_a_commit_reaches_the_receiver_through_the_webhook_worker(
    user, account, receiver, tmp_path, settings
):
    endpoint, _ = endpoint_create(owner=user, url=receiver.url)
    dispatch.forget_endpoints()
    env = {"WEBHOOK_CA_CERTS": settings.WEBHOOK_CA_CERTS, "WEBHOOK_RETRY_BASE_SECONDS": "1"}
    worker = start_worker([topics.QUEUE_WEBHOOKS], tmp_path / "worker.log", env, pool="solo")
    try:
        with transaction.atomic():
            events_record(account, "folder", "created", [7])
        receiver.wait_for(1, timeout=30)
        assert [e["type"] for e in receiver.events()] == ["folder.created"]

        receiver.statuses = [503]
        with transaction.atomic():
            events_record(account, "folder", "updated", [7])
        wait_for(lambda: len(receiver.received) == 2, timeout=30, what="the failed attempt")
        wait_for(
            lambda: (
                (sweep() or True)
                and WebhookDelivery.objects.filter(endpoint=endpoint, status="delivered").count()
                == 2
            ),
            timeout=30,
            interval=0.5,
            what="the retry, enqueued by the sweep",
        )
        assert [e["type"] for e in receiver.events()] == [
            "folder.created",
            "folder.updated",
            "folder.updated",
        ]
    finally:
        stop_worker(worker)
