"""Thin IMAP tasks: ids in, call the sync service; retries with backoff by kind of failure.

Sync tasks carry a trigger token (`topics.sync_request_now`) and run what the account's wants
say when they get its lock (`services.imap_sync_account`): a duplicate, or a stale message Redis
re-delivers after its visibility timeout, does nothing. A task without a token (an older
producer, e.g. `incremental_sync.delay(id)`) records its own want first, as a retry does.

Failures:
- our own infrastructure (PostgreSQL, Redis, the broker): retried after 5 s, doubling up to
  60 s, so a sync resumes within a minute of the outage ending; the account shows the error
  while it lasts (when the database can be written). The pass's run stays "running", so if
  the retry itself is lost (Redis down when it was to be queued) the watchdog resumes the work.
- the IMAP server unreachable, the connection cut, a login refused for now (ImapConnectError,
  ImapLoginDeferred): retried after 15 s, doubling up to 5 minutes, 10 times; then the account
  shows the error and waits for its next trigger (IDLE, the poll).
- the password refused (ImapAuthError): the account is parked (auth_error) and its login is
  re-tested on a slow schedule (`auth_retest`, run by the watchdog).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task
from django.db import transaction

from emailplatform import syncstate, topics
from messages.account_status import account_mark_error, account_reactivate
from messages.models import Account, Message
from messages.outbox_burst import outbound_send_task_run
from messages.services import dead_letter_record
from messages.sync_tasks import (
    ProviderSyncTasks,
    SyncStop,
    full_sync_payload_read,
    mark_account,
    sync_task_run,
)

from . import watchdog  # noqa: F401  (starts the sync watchdog in every worker)
from .accounts import imap_connection_test
from .changes import ChangeError, imap_message_change
from .imap import ImapAuthError, ImapConnectError, ImapError, ImapRefusedError
from .outbound import SmtpOutboundSender
from .services import imap_sync_account
from .sync import INFRA_ERRORS, server_for

logger = logging.getLogger(__name__)

# A full sync is many bounded tasks: each chunk runs at most this long, then hands over.
CHUNK_SECONDS = 240

IMAP_RETRY = {"base": 15, "cap": 5 * 60, "max_retries": 10}

SYNC_TASKS = ProviderSyncTasks(
    provider="imap",
    sync=imap_sync_account,
    unreachable=(ImapConnectError,),
    retry_policy=IMAP_RETRY,
    stops=(
        SyncStop(ImapAuthError, "auth_error", "parked; its login is re-tested later"),
        SyncStop(ImapRefusedError, "refused", "the outbound guard refused its host"),
    ),
    chunk_seconds=CHUNK_SECONDS,
)

RETRY = {
    "autoretry_for": (ImapConnectError, *INFRA_ERRORS),
    "retry_backoff": 15,
    "retry_backoff_max": 5 * 60,
    "retry_jitter": True,
    "max_retries": 10,
}


@shared_task(name=topics.FULL_SYNC_TASKS["imap"], bind=True, max_retries=None)
def full_sync(self: Task, payload: dict[str, Any]) -> dict[str, Any]:
    """EmailFullSync consumer for IMAP accounts; a payload that breaks the contract is
    dead-lettered with the reason, not retried."""
    read = full_sync_payload_read(payload)
    if isinstance(read, str):
        letter = dead_letter_record(task_name=full_sync.name, reason=read, payload=payload)
        return {"deadLetter": letter.pk, "reason": read}
    account_id, options, kind = read
    trigger = payload.get("trigger")
    return sync_task_run(self, SYNC_TASKS, account_id, kind=kind, options=options, trigger=trigger)


@shared_task(name="smtp_sync.incremental_sync", bind=True, max_retries=None)
def incremental_sync(self: Task, account_id: int, trigger: str | None = None) -> dict[str, Any]:
    return sync_task_run(
        self, SYNC_TASKS, account_id, kind=syncstate.INCREMENTAL, options={}, trigger=trigger
    )


@shared_task(name=topics.MESSAGE_CHANGE_TASKS["imap"], bind=True, **RETRY)
def apply_message_change(self, account_id: int, message_id: int, change: dict) -> dict:
    """Apply a client's change on the server; a failure is retried, then shown on the account."""
    try:
        imap_message_change(message_id, change)
    except Message.DoesNotExist:
        return {"error": "message no longer exists"}
    except ChangeError as exc:
        mark_account(account_id, f"could not apply a change to message {message_id}: {exc}")
        return {"error": str(exc)}
    except ImapConnectError as exc:
        if self.request.retries >= self.max_retries:
            mark_account(account_id, f"could not apply a change to message {message_id}: {exc}")
        raise
    except ImapAuthError as exc:
        mark_account(account_id, str(exc), auth=True)
        return {"error": str(exc)}
    return {"applied": change}


@shared_task(name=topics.OUTBOUND_SEND_TASKS["imap"])
def send_outbound(outbound_id: int | list[int]) -> dict[str, Any]:
    """One delivery step of an outbound message over SMTP, or of a burst of one account's
    (a list of ids: messages.outbox_burst). Retries and waits are dispatched again by
    messages.outbox_delivery, not by Celery."""
    return outbound_send_task_run(outbound_id, SmtpOutboundSender)


@shared_task(name="smtp_sync.auth_retest", **RETRY)
def auth_retest(account_id: int) -> dict[str, Any]:
    """Try the login of a parked (auth_error) account again; on success reactivate it and
    sync. Queued by the watchdog when the account's `auth_retest_at` is due."""
    account = Account.objects.filter(pk=account_id, status=Account.Status.AUTH_ERROR).first()
    if account is None:
        return {"skipped": "not parked"}
    try:
        imap_connection_test(server_for(account))
    except ImapAuthError as exc:
        account_mark_error(account, str(exc), auth=True)  # the next re-test backs off
        return {"refused": str(exc)}
    except ImapError as exc:  # unreachable now: the next re-test is already scheduled
        return {"error": str(exc)}
    with transaction.atomic():
        if account_reactivate(account):
            topics.publish_incremental_sync(account.pk, account.provider)
    logger.info("account %s: the server accepts its login again; reactivated", account_id)
    return {"reactivated": True}


@shared_task(name="smtp_sync.poll_accounts")
def poll_accounts() -> int:
    """Beat job: an incremental sync of every active IMAP account (IDLE covers the rest).
    Coalesced: an account already syncing or queued gets no second task."""
    ids = list(
        Account.objects.filter(
            provider=Account.Provider.IMAP, status=Account.Status.ACTIVE
        ).values_list("id", flat=True)
    )
    for account_id in ids:
        topics.sync_request_now(account_id, Account.Provider.IMAP, kind=syncstate.INCREMENTAL)
    return len(ids)
