"""Thin tasks: validate, call a service, record the outcome."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.db import InterfaceError, OperationalError

from emailplatform import topics

from .batch_store import batch_store
from .outbox_dispatch import outbox_sweep_task  # noqa: F401  (registers beat's outbox sweeper)
from .services import account_delete, full_syncs_schedule
from .storage_sweep import storage_sweep_task  # noqa: F401  (registers beat's sweeper task)

# Deleting a big account is many bounded tasks: each runs at most this long, then hands over.
DELETE_CHUNK_SECONDS = 240


@shared_task(
    name=topics.TASK_INGEST_NEW_MESSAGES,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    retry_backoff_max=300,
    max_retries=10,
)
def ingest_new_messages(payload: Any) -> dict[str, Any]:
    """EmailNewMessage consumer (messages.batch_store has the rules that make any order,
    redelivery and crash safe)."""
    return batch_store(payload)


@shared_task(name=topics.TASK_SCHEDULE_FULL_SYNCS)
def schedule_full_syncs() -> int:
    """Beat job: EmailFullSync for every active account."""
    return full_syncs_schedule()


@shared_task(
    name=topics.TASK_DELETE_ACCOUNT,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    retry_backoff_max=300,
    max_retries=10,
)
def delete_account(account_id: int) -> dict[str, Any]:
    """Delete an account marked for deletion (API DELETE), with its mail."""
    done = account_delete(account_id=account_id, max_seconds=DELETE_CHUNK_SECONDS)
    if not done:
        topics.publish_account_deletion(account_id)
    return {"accountId": account_id, "done": done}
