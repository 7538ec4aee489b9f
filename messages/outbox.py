"""The outbox's dispatcher: hand an outbound message to its provider's send task.

Minimal version written on the delivery branch (the outbox branch owns this module; keep its
version at merge): the send task of the account's provider (topics.OUTBOUND_SEND_TASKS) is
enqueued on the provider's queue once the current transaction commits, due at the message's
`next_attempt_at`.
"""

from __future__ import annotations

from django.db import transaction

from emailplatform import topics

from .models import OutboundMessage


def outbox_dispatch(outbound: OutboundMessage) -> None:
    """Enqueue OUTBOUND_SEND_TASKS[provider] for OUTBOUND (on commit), eta = next_attempt_at."""
    from emailplatform.celery import app

    provider = outbound.account.provider
    task = topics.OUTBOUND_SEND_TASKS[provider]
    queue = topics.PROVIDER_QUEUES[provider]
    eta = outbound.next_attempt_at
    args = [outbound.pk]
    transaction.on_commit(lambda: app.send_task(task, args=args, queue=queue, eta=eta))
