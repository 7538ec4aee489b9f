"""The send task in a real Celery worker: dispatched on the smtp queue, a 4xx retried by the
worker itself when its ETA comes (outbox_dispatch), and the message delivered once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from emailplatform import topics
from emailplatform.celery import app
from messages.models import OutboundMessage
from messages.outbox import outbox_dispatch
from messages.outbox_dispatch import outbox_sweep
from smtp_sync import tasks  # noqa: F401  (registers smtp_sync.send_outbound)
from smtp_sync.models import ImapSettings
from tests.messages.api.conftest import broker
from tests.outbound_factory import outbound_create
from tests.smtp_fake import SmtpBehaviour
from tests.worker import start_worker, stop_worker, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

SEND = topics.OUTBOUND_SEND_TASKS["imap"]


@pytest.fixture(autouse=True)
def _smtp_queue_emptied():
    broker().delete(topics.QUEUE_SMTP)
    yield
    broker().delete(topics.QUEUE_SMTP)


def test_a_worker_retries_a_4xx_when_due_and_delivers_once(
    imap_account, imap_user, smtp_server, settings, tmp_path
):
    server = smtp_server(
        SmtpBehaviour(data_replies=["451 4.3.0 Try again later"]),
        users={imap_user.username: imap_user.password},
    )
    ImapSettings.objects.filter(account=imap_account).update(
        smtp_host=server.host, smtp_port=server.port, smtp_security="none"
    )
    outbound = outbound_create(imap_account, to=["bob@example.net"])
    worker = start_worker(
        [topics.QUEUE_SMTP],
        tmp_path / "worker.log",
        {
            "SYNC_WATCHDOG_SECONDS": "0",
            "OUTBOUND_RETRY_BASE_SECONDS": "2",
            "OUTBOUND_ALLOWED_NETWORKS": ",".join(settings.OUTBOUND_ALLOWED_NETWORKS),
            "SMTP_TIMEOUT_SECONDS": "10",
        },
        pool="solo",
    )
    try:
        outbox_dispatch(outbound)  # on commit: autocommit here, so now

        def state() -> str:
            return OutboundMessage.objects.get(pk=outbound.pk).state

        wait_for(lambda: state() == "sent", timeout=60, what="the message to be sent")
    finally:
        stop_worker(worker)
        print((tmp_path / "worker.log").read_text()[-3000:])

    sent = OutboundMessage.objects.get(pk=outbound.pk)
    assert sent.attempts == 2 and sent.sent_message is not None
    assert len(server.messages) == 1


def test_a_worker_killed_while_the_server_holds_the_message_never_resends_it(
    imap_account, imap_user, smtp_server, settings, tmp_path
):
    """kill -9 of the worker after the message data went out, before the server's answer:
    the message stays `sending`; once the sweeper makes it `unknown`, its copy in Sent is
    unconfirmed, so it is not sent again: it fails with a reason saying it may have gone."""
    server = smtp_server(
        SmtpBehaviour(after_data="hang"), users={imap_user.username: imap_user.password}
    )
    ImapSettings.objects.filter(account=imap_account).update(
        smtp_host=server.host, smtp_port=server.port, smtp_security="none"
    )
    outbound = outbound_create(imap_account, to=["bob@example.net"])
    worker = start_worker(
        [topics.QUEUE_SMTP],
        tmp_path / "worker.log",
        {
            "SYNC_WATCHDOG_SECONDS": "0",
            "OUTBOUND_ALLOWED_NETWORKS": ",".join(settings.OUTBOUND_ALLOWED_NETWORKS),
            "SMTP_TIMEOUT_SECONDS": "120",
        },
        pool="solo",
    )
    try:
        outbox_dispatch(outbound)
        wait_for(lambda: len(server.messages) == 1, timeout=60, what="the data to arrive")
        worker.kill()
        worker.wait(10)
    finally:
        stop_worker(worker)
    assert OutboundMessage.objects.get(pk=outbound.pk).state == "sending"

    later = timezone.now() + timedelta(seconds=settings.OUTBOX_SENDING_TIMEOUT_SECONDS + 1)
    assert outbox_sweep(now=later)["stuck"] == 1
    OutboundMessage.objects.filter(pk=outbound.pk).update(next_attempt_at=timezone.now())
    assert app.tasks[SEND].apply(args=[outbound.pk]).get() == {"unknown": "cannot tell yet"}
    settings.OUTBOUND_UNKNOWN_GIVE_UP_SECONDS = 0
    OutboundMessage.objects.filter(pk=outbound.pk).update(next_attempt_at=timezone.now())
    app.tasks[SEND].apply(args=[outbound.pk]).get()

    failed = OutboundMessage.objects.get(pk=outbound.pk)
    assert failed.state == "failed" and "may have accepted" in failed.last_error
    assert len(server.messages) == 1
