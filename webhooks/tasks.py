"""Thin tasks on the `webhooks` queue: ids in, a service call."""

from __future__ import annotations

from celery import shared_task
from django.db import InterfaceError, OperationalError

from . import delivery, dispatch


@shared_task(
    name=dispatch.TASK_DELIVER,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    max_retries=5,
)
def deliver(endpoint_id: int) -> int:
    """One delivery pass of an endpoint; another is queued when its budget ran out."""
    with dispatch.pass_lock(endpoint_id) as held:
        if not held:
            return 0
        result = delivery.endpoint_deliver(endpoint_id)
    if result.more:
        dispatch.pass_enqueue(endpoint_id)
    return result.delivered


@shared_task(name=dispatch.TASK_SWEEP)
def sweep() -> int:
    """Beat job: a pass for every endpoint with something due (retries, missed nudges)."""
    return sum(dispatch.pass_enqueue(pk) for pk in delivery.endpoints_due())
