"""Putting outbound messages on their provider's queue, and the sweeper that makes sure none
is forgotten.

`outbox_dispatch` is the one path to the send task (topics.OUTBOUND_SEND_TASKS): a first send,
a scheduled one, a retry (the delivery side calls it after `outbound_retry`) and the sweeper's.
The task runs when the message is due (Celery ETA = next_attempt_at); a message due beyond the
horizon (OUTBOX_ETA_HORIZON_SECONDS) is not enqueued yet: Redis would re-deliver a task waiting
longer than its visibility timeout, and a worker holds every ETA task in memory. Enqueueing
twice is harmless: the task's claim (outbox_states.outbound_claim) lets one attempt through.

The sweeper (beat, every OUTBOX_SWEEP_INTERVAL_SECONDS) reads only the partial index
`outbound_due` (queued, sending and unknown rows by next_attempt_at):
- queued messages coming within the horizon: enqueued with their ETA;
- queued or unknown messages due for longer than the grace (their task was lost: a broker
  flush, a worker killed before it acknowledged): enqueued again, at most once per grace
  period each (a backlog that merely waits for a worker is not multiplied);
- sending messages whose attempt started longer ago than the timeout (a worker that died
  mid-send): marked `unknown` (the server may have the message) and enqueued: the delivery
  side looks for the Message-ID in Sent before any resend.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from celery import shared_task
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from emailplatform import topics

from .models import Account, OutboundMessage
from .outbox_states import outbound_unknown

logger = logging.getLogger(__name__)

TASK_OUTBOX_SWEEP = "messages.outbox_sweep"
SWEEP_BATCH = 1000
# The reason shown on a queued message held by its account (outbox_delivery): also how
# `outbox_wake` tells those from messages waiting for a retry, a sending limit or their time.
ACCOUNT_WAIT_PREFIX = "Waiting for the account: "
STUCK_REASON = (
    "The sending worker stopped answering during the attempt: the server may have the "
    "message, so it is looked for in Sent before any resend."
)

State = OutboundMessage.State


def outbox_dispatch(outbound: OutboundMessage) -> bool:
    """Enqueue OUTBOUND's send task on its provider's queue once the current transaction
    commits, to run at next_attempt_at; False when it is not enqueued now (its provider
    cannot send, or it is due beyond the horizon: the sweeper enqueues it later)."""
    return outbox_dispatch_many([outbound]) == 1


def outbox_dispatch_many(outbounds: Sequence[OutboundMessage]) -> int:
    """`outbox_dispatch` for many messages at once: the messages of one account due at the
    same time go in one task (a burst of up to OUTBOX_BURST_MAX ids, sent over one
    connection: messages.outbox_burst); how many messages were enqueued."""
    now = timezone.now()
    horizon = now + timedelta(seconds=settings.OUTBOX_ETA_HORIZON_SECONDS)
    bursts: dict[tuple[str, str, int, datetime | None], list[int]] = defaultdict(list)
    for outbound in outbounds:
        provider = outbound.account.provider
        task_name = topics.OUTBOUND_SEND_TASKS.get(provider)
        if task_name is None:
            logger.warning("outbound %s: provider %s cannot send", outbound.pk, provider)
            continue
        due = outbound.next_attempt_at
        if due is not None and due > horizon:
            continue
        queue = topics.PROVIDER_QUEUES[provider]
        later = due if due is not None and due > now else None
        bursts[(task_name, queue, outbound.account_id, later)].append(outbound.pk)
    size = max(1, settings.OUTBOX_BURST_MAX)
    grouped: dict[tuple[str, str, datetime | None], list[list[int]]] = defaultdict(list)
    for (task_name, queue, _account, due), ids in bursts.items():
        ids.sort()
        grouped[(task_name, queue, due)] += [ids[i : i + size] for i in range(0, len(ids), size)]

    def send() -> None:
        for (task_name, queue, due), chunks in grouped.items():
            for ids in chunks:
                _send(task_name, ids if len(ids) > 1 else ids[0], queue, due)

    if grouped:
        transaction.on_commit(send)
    return sum(len(ids) for ids in bursts.values())


def _send(task_name: str, outbound_ids: int | list[int], queue: str, due: datetime | None) -> None:
    from emailplatform.celery import app

    eta = due if due is not None and due > timezone.now() else None
    app.send_task(task_name, args=[outbound_ids], queue=queue, eta=eta)


def outbox_wake(account_ids: Iterable[int]) -> int:
    """The queued messages these accounts held while they could not send come due now (the
    account is active again); how many were enqueued."""
    now = timezone.now()
    with transaction.atomic():
        woken = list(
            OutboundMessage.objects.select_for_update(of=("self",))
            .select_related("account")
            .filter(
                account_id__in=list(account_ids),
                account__status=Account.Status.ACTIVE,
                state=State.QUEUED,
                next_attempt_at__gt=now,
                last_error__startswith=ACCOUNT_WAIT_PREFIX,
            )
        )
        for outbound in woken:
            outbound.next_attempt_at = now
        OutboundMessage.objects.bulk_update(woken, ["next_attempt_at"])
        return outbox_dispatch_many(woken)


def wake_on_status(sender: type, account_ids: list[int], status: str, **kwargs: object) -> None:
    """`account_status_changed` receiver: accounts resumed by a queryset update (admin)."""
    if status == Account.Status.ACTIVE:
        outbox_wake(account_ids)


def wake_on_save(sender: type, instance: Account, **kwargs: object) -> None:
    """post_save receiver: a status saved by name as active (a new password, a reconnect)."""
    if "status" in (kwargs.get("update_fields") or ()) and instance.status == Account.Status.ACTIVE:
        account_ids = [instance.pk]
        transaction.on_commit(lambda: outbox_wake(account_ids))


def _due_rows(**lookups: object) -> list[OutboundMessage]:
    return list(
        OutboundMessage.objects.filter(**lookups)
        .select_related("account")
        .only("id", "state", "next_attempt_at", "sending_at", "account__provider")
        .order_by("next_attempt_at")[:SWEEP_BATCH]
    )


def _first_in_grace(outbound_id: int, grace: timedelta) -> bool:
    return cache.add(f"outbox:redispatched:{outbound_id}", 1, timeout=grace.total_seconds())


def outbox_sweep(*, now: datetime | None = None) -> dict[str, int]:
    """One pass of the sweeper (see the module's docstring); what it did, counted."""
    now = now or timezone.now()
    horizon = timedelta(seconds=settings.OUTBOX_ETA_HORIZON_SECONDS)
    window = timedelta(seconds=2 * settings.OUTBOX_SWEEP_INTERVAL_SECONDS)
    grace = timedelta(seconds=settings.OUTBOX_LOST_TASK_GRACE_SECONDS)
    timeout = timedelta(seconds=settings.OUTBOX_SENDING_TIMEOUT_SECONDS)
    outcome = {"scheduled": 0, "lost": 0, "stuck": 0}

    outcome["scheduled"] = outbox_dispatch_many(
        _due_rows(
            state=State.QUEUED,
            next_attempt_at__gt=max(now, now + horizon - window),
            next_attempt_at__lte=now + horizon,
        )
    )
    lost = _due_rows(state__in=[State.QUEUED, State.UNKNOWN], next_attempt_at__lte=now - grace)
    outcome["lost"] = outbox_dispatch_many([o for o in lost if _first_in_grace(o.pk, grace)])

    # A claimed attempt keeps the next_attempt_at it was due at, which is before its start:
    # the index narrows the rows, sending_at decides.
    for outbound in _due_rows(
        state=State.SENDING, next_attempt_at__lte=now - timeout, sending_at__lte=now - timeout
    ):
        marked = outbound_unknown(outbound.pk, STUCK_REASON, check_at=now)
        if marked is not None:
            outcome["stuck"] += outbox_dispatch(marked)

    if any(outcome.values()):
        logger.warning("outbox sweep: %s", outcome)
    return outcome


@shared_task(name=TASK_OUTBOX_SWEEP, ignore_result=True)
def outbox_sweep_task() -> dict[str, int]:
    return outbox_sweep()
