"""The outbox sweeper (beat): a send task lost from Redis is enqueued again, an attempt stuck in
`sending` (its worker died) becomes `unknown` and goes to the delivery side, scheduled mail is
enqueued as it comes within the ETA horizon. Read on the real Redis queue."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from messages.models import OutboundMessage
from messages.outbox import outbound_create
from messages.outbox_dispatch import TASK_OUTBOX_SWEEP, outbox_sweep
from messages.outbox_states import outbound_claim

from .conftest import broker, send_tasks, waiting

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_queues")]


@pytest.fixture
def send_now(user, sender, django_capture_on_commit_callbacks):
    def send(**data) -> OutboundMessage:
        with django_capture_on_commit_callbacks(execute=True):
            outbound = outbound_create(
                user=user,
                data={
                    "account": sender.pk,
                    "to": [{"name": "", "address": "bob@example.org"}],
                    "send": True,
                    **data,
                },
            )
        return OutboundMessage.objects.get(pk=outbound.pk)

    return send


@pytest.fixture
def sweep(django_capture_on_commit_callbacks):
    def run() -> dict:
        with django_capture_on_commit_callbacks(execute=True):
            return outbox_sweep()

    return run


def age(outbound: OutboundMessage, seconds: float, **extra) -> None:
    """Move OUTBOUND's due time (and, for a claimed one, its start) SECONDS into the past."""
    past = timezone.now() - timedelta(seconds=seconds)
    OutboundMessage.objects.filter(pk=outbound.pk).update(
        next_attempt_at=past, **dict.fromkeys(extra, past)
    )


def test_a_lost_send_task_is_enqueued_again(send_now, sweep, settings):
    outbound = send_now()
    assert send_tasks() == [[outbound.pk]]
    broker().delete("smtp")  # the broker lost it (a flush, a crash before persistence)

    assert sweep() == {"scheduled": 0, "lost": 0, "stuck": 0}  # due, but within the grace
    assert send_tasks() == []

    age(outbound, settings.OUTBOX_LOST_TASK_GRACE_SECONDS + 5)
    assert sweep()["lost"] == 1
    assert send_tasks() == [[outbound.pk]]
    broker().delete("smtp")
    # Once per grace period: a backlog waiting for a worker is not multiplied.
    assert sweep()["lost"] == 0
    assert send_tasks() == []


def test_a_message_stuck_in_sending_becomes_unknown_and_is_resolved(send_now, sweep, settings):
    outbound = send_now()
    broker().delete("smtp")
    assert outbound_claim(outbound.pk) is not None

    age(outbound, settings.OUTBOX_SENDING_TIMEOUT_SECONDS - 60, sending_at=True)
    assert sweep()["stuck"] == 0  # a slow attempt still within the timeout is left alone
    assert OutboundMessage.objects.get(pk=outbound.pk).state == "sending"

    age(outbound, settings.OUTBOX_SENDING_TIMEOUT_SECONDS + 5, sending_at=True)
    assert sweep()["stuck"] == 1
    stuck = OutboundMessage.objects.get(pk=outbound.pk)
    assert stuck.state == "unknown"
    assert "Sent" in stuck.last_error
    assert send_tasks() == [[outbound.pk]]  # the delivery side looks for it before any resend


def test_cancelled_and_sent_messages_are_left_alone(send_now, sweep, settings, api):
    cancelled = send_now()
    api.post(f"/api/outbound/{cancelled.pk}/cancel/")
    age(cancelled, settings.OUTBOX_LOST_TASK_GRACE_SECONDS + 5)
    broker().delete("smtp")
    assert sweep() == {"scheduled": 0, "lost": 0, "stuck": 0}
    assert send_tasks() == []


def test_scheduled_mail_is_enqueued_as_it_comes_within_the_horizon(send_now, sweep, settings):
    outbound = send_now(send_at=timezone.now() + timedelta(days=2))
    assert waiting("smtp") == []
    assert sweep()["scheduled"] == 0

    soon = timezone.now() + timedelta(seconds=settings.OUTBOX_ETA_HORIZON_SECONDS - 30)
    OutboundMessage.objects.filter(pk=outbound.pk).update(next_attempt_at=soon)
    assert sweep()["scheduled"] == 1
    [task] = waiting("smtp")
    assert task["args"] == [outbound.pk]
    assert abs(task["eta"] - soon) < timedelta(seconds=1)


def test_beat_runs_the_sweeper():
    task = PeriodicTask.objects.get(task=TASK_OUTBOX_SWEEP)
    assert task.enabled
    assert task.interval.every * {"seconds": 1, "minutes": 60}[task.interval.period] <= 300
