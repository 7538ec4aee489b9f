"""Thin IMAP tasks: ids in, call the sync service, re-enqueue the next chunk of long work."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from django.conf import settings

from emailplatform import topics
from messages.models import Account, Message
from messages.services import dead_letter_record

from .changes import ChangeError, imap_message_change
from .imap import ImapAuthError, ImapConnectError
from .services import imap_sync_account
from .sync import account_mark_error

logger = logging.getLogger(__name__)

# A full sync is many bounded tasks: each chunk runs at most this long, then hands over.
CHUNK_SECONDS = 240

MAX_DEFERRALS = 3

RETRY = {
    "autoretry_for": (ImapConnectError,),
    "retry_backoff": 30,
    "retry_backoff_max": 30 * 60,
    "retry_jitter": True,
    "max_retries": 8,
}


@shared_task(name=topics.FULL_SYNC_TASKS["imap"], **RETRY)
def full_sync(payload: dict[str, Any]) -> dict[str, Any]:
    """EmailFullSync consumer for IMAP accounts; a payload that breaks the contract is
    dead-lettered with the reason, not retried."""
    try:
        account_id = int(payload["accountId"])
        options = dict(payload.get("options") or {})
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        reason = f"EmailFullSync payload unreadable ({type(exc).__name__}: {exc})"
        letter = dead_letter_record(task_name=full_sync.name, reason=reason, payload=payload)
        return {"deadLetter": letter.pk, "reason": reason}
    return _run(account_id, full=not payload.get("continuation"), options=options, payload=payload)


@shared_task(name="smtp_sync.incremental_sync", **RETRY)
def incremental_sync(account_id: int) -> dict[str, Any]:
    return _run(account_id, full=False, options={}, payload=None)


@shared_task(name=topics.MESSAGE_CHANGE_TASKS["imap"], bind=True, **RETRY)
def apply_message_change(self, account_id: int, message_id: int, change: dict) -> dict:
    """Apply a client's change on the server; a failure is retried, then shown on the account."""
    try:
        imap_message_change(message_id, change)
    except Message.DoesNotExist:
        return {"error": "message no longer exists"}
    except ChangeError as exc:
        _mark(account_id, f"could not apply a change to message {message_id}: {exc}")
        return {"error": str(exc)}
    except ImapConnectError as exc:
        if self.request.retries >= self.max_retries:
            _mark(account_id, f"could not apply a change to message {message_id}: {exc}")
        raise
    except ImapAuthError as exc:
        _mark(account_id, str(exc), auth=True)
        return {"error": str(exc)}
    return {"applied": change}


def _mark(account_id: int, reason: str, *, auth: bool = False) -> None:
    account = Account.objects.filter(pk=account_id).first()
    if account is not None:
        account_mark_error(account, reason, auth=auth)


@shared_task(name="smtp_sync.poll_accounts")
def poll_accounts() -> int:
    """Beat job: an incremental sync of every active IMAP account (IDLE covers the rest)."""
    ids = list(
        Account.objects.filter(
            provider=Account.Provider.IMAP, status=Account.Status.ACTIVE
        ).values_list("id", flat=True)
    )
    for account_id in ids:
        incremental_sync.delay(account_id)
    return len(ids)


def _run(
    account_id: int, *, full: bool, options: dict[str, Any], payload: dict[str, Any] | None
) -> dict[str, Any]:
    try:
        report = imap_sync_account(
            account_id, full=full, max_seconds=CHUNK_SECONDS, options=options
        )
    except ImapAuthError as exc:
        logger.warning("account %s: %s (not retried)", account_id, exc)
        return {"error": "auth_error"}
    except Account.DoesNotExist:
        return {"error": "account does not exist"}
    if report is None:
        if payload is not None and payload.get("deferrals", 0) < MAX_DEFERRALS:
            # Another sync holds the lock -- or held it and died: come back once it expired.
            retry = {**payload, "deferrals": payload.get("deferrals", 0) + 1}
            full_sync.apply_async(
                args=[retry], queue=topics.QUEUE_FULL_SYNC, countdown=settings.SYNC_LOCK_TTL_SECONDS
            )
        return {"coalesced": True}
    if not report.done:
        continuation = {
            "accountId": account_id,
            "provider": "imap",
            "options": options,
            "continuation": True,
        }
        full_sync.apply_async(args=[continuation], queue=topics.QUEUE_FULL_SYNC)
    return {"done": report.done, "summary": report.summary()}
