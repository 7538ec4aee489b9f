"""Thin Gmail sync tasks: ids in, call the sync service; retries by kind of failure.

As smtp_sync's: sync tasks carry a trigger token (`topics.sync_request_now`) and run what the
account's wants say once they hold its lock, so pushes and polls coalesce and a stale
re-delivered task does nothing.

Failures:
- GmailAuthError (the grant revoked or expired): the account is parked (auth_error) with a
  readable reason and nothing is retried: its owner must connect it again.
- GmailUnavailable (rate limits, 5xx, the network, after the client's own retries): the task
  is retried after 30 s, doubling up to 10 minutes, 8 times; then the account shows the error
  and waits for its next trigger (a push, the poll).
- GmailRequestError (Gmail refused the request): shown on the account, not retried.
- our own infrastructure (PostgreSQL, Redis, the broker): retried soon (`messages.sync_tasks`).
- the account deleted: nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task

from emailplatform import syncstate, topics
from messages.models import Account
from messages.services import dead_letter_record
from messages.sync_tasks import (
    ProviderSyncTasks,
    SyncStop,
    full_sync_payload_read,
    sync_task_run,
)

from . import (  # noqa: E402  (autodiscovered with this module)
    change_tasks,  # noqa: F401  (write-back and sending)
    watch_tasks,  # noqa: F401  (users.watch renewal and stop)
)
from .client import GmailAuthError, GmailError, GmailUnavailable
from .services import gmail_sync_account

logger = logging.getLogger(__name__)

# A full sync is many bounded tasks: each chunk runs at most this long, then hands over.
CHUNK_SECONDS = 240
GMAIL_RETRY = {"base": 30, "cap": 10 * 60, "max_retries": 8}

SYNC_TASKS = ProviderSyncTasks(
    provider="gmail",
    sync=gmail_sync_account,
    unreachable=(GmailUnavailable,),
    retry_policy=GMAIL_RETRY,
    stops=(
        SyncStop(GmailAuthError, "auth_error", "parked until it is connected again"),
        SyncStop(GmailError),
    ),
    chunk_seconds=CHUNK_SECONDS,
)


@shared_task(name=topics.FULL_SYNC_TASKS["gmail"], bind=True, max_retries=None)
def full_sync(self: Task, payload: dict[str, Any]) -> dict[str, Any]:
    """EmailFullSync consumer for Gmail accounts; a payload that breaks the contract is
    dead-lettered with the reason, not retried."""
    read = full_sync_payload_read(payload)
    if isinstance(read, str):
        letter = dead_letter_record(task_name=full_sync.name, reason=read, payload=payload)
        return {"deadLetter": letter.pk, "reason": read}
    account_id, options, kind = read
    trigger = payload.get("trigger")
    return sync_task_run(self, SYNC_TASKS, account_id, kind=kind, options=options, trigger=trigger)


@shared_task(name=topics.INCREMENTAL_SYNC_TASKS["gmail"], bind=True, max_retries=None)
def incremental_sync(self: Task, account_id: int, trigger: str | None = None) -> dict[str, Any]:
    """History sync (or the full sync an account without a cursor needs)."""
    return sync_task_run(
        self, SYNC_TASKS, account_id, kind=syncstate.INCREMENTAL, options={}, trigger=trigger
    )


@shared_task(name="gmail_sync.poll_accounts")
def poll_accounts() -> int:
    """Beat job: a history sync of every active Gmail account, since pushes can be dropped.
    Coalesced: an account already syncing or queued gets no second task."""
    ids = list(
        Account.objects.filter(
            provider=Account.Provider.GMAIL, status=Account.Status.ACTIVE
        ).values_list("id", flat=True)
    )
    for account_id in ids:
        topics.sync_request_now(account_id, Account.Provider.GMAIL, kind=syncstate.INCREMENTAL)
    return len(ids)
