"""Thin tasks: validate, call a service, record the outcome."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from django.db import InterfaceError, OperationalError, transaction

from emailplatform import topics

from .ingest import messages_upsert
from .models import Account
from .services import account_delete, dead_letter_record, full_syncs_schedule, sync_run_add
from .storage_sweep import storage_sweep_task  # noqa: F401  (registers beat's sweeper task)

logger = logging.getLogger(__name__)

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
    """EmailNewMessage consumer; a payload that breaks the contract is dead-lettered, and so
    is a message that cannot be stored even as damaged (the rest of the batch is stored)."""
    try:
        batch = topics.parse_new_message_payload(payload)
    except topics.PayloadError as exc:
        return _reject(payload, str(exc))
    account = Account.objects.filter(pk=batch.account_id).first()
    if account is None:
        return _reject(payload, f"accountId: account {batch.account_id} does not exist")
    result = messages_upsert(account=account, items=batch.messages)
    if batch.sync_run_id:
        sync_run_add(run_id=batch.sync_run_id, result=result)
    staged = [m.staged_ref for m in batch.messages if m.staged_ref]
    if staged:
        transaction.on_commit(lambda: topics.delete_staged(staged))
    logger.info(
        "ingested account=%s created=%s updated=%s unchanged=%s damaged=%s dead_letters=%s",
        account.pk,
        result.created,
        result.updated,
        result.unchanged,
        result.damaged,
        len(result.dead_letters),
    )
    return {
        "created": result.created,
        "updated": result.updated,
        "unchanged": result.unchanged,
        "damaged": result.damaged,
        "deadLetters": [d.letter_id for d in result.dead_letters],
    }


def _reject(payload: Any, reason: str) -> dict[str, Any]:
    letter = dead_letter_record(
        task_name=topics.TASK_INGEST_NEW_MESSAGES, reason=reason, payload=payload
    )
    logger.warning("dead-lettered EmailNewMessage payload %s: %s", letter.pk, reason)
    return {"deadLetter": letter.pk, "reason": reason}


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
