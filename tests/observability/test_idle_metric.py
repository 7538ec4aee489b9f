"""The IDLE listener's sessions on /metrics: the supervisor reports what its watchers hold."""

from __future__ import annotations

import threading

import pytest

from emailplatform import syncstate
from emailplatform.observability import metrics
from messages.models import Account
from smtp_sync.idle import IdleSupervisor
from smtp_sync.sync import ImapAccountSync
from tests.worker import wait_for

from .scrape import scrape, value

pytestmark = pytest.mark.django_db(transaction=True)


def test_idle_sessions_held_show_on_metrics(client, settings, imap_account):
    settings.METRICS_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    syncstate.client().delete(metrics.IDLE_KEY)
    ImapAccountSync(imap_account).sync()  # records the server's capabilities (IDLE)
    supervisor = IdleSupervisor(lambda _id: None)
    stopping = threading.Event()
    runner = threading.Thread(
        target=supervisor.run, args=(stopping,), kwargs={"refresh_seconds": 1}
    )
    runner.start()

    def sessions() -> float:
        return value(scrape(client), "emailplatform_idle_connections")

    try:
        wait_for(lambda: sessions() == 1, timeout=30, what="one IDLE session on /metrics")
        Account.objects.filter(pk=imap_account.pk).update(status=Account.Status.PAUSED)
        wait_for(lambda: sessions() == 0, timeout=60, what="the paused account's session gone")
    finally:
        stopping.set()
        runner.join(timeout=10)
        supervisor.stop()
        syncstate.client().delete(metrics.IDLE_KEY)
