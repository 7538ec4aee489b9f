"""Thin tasks of the Gmail push watch (services: gmail_sync.watch): ids in.

GmailUnavailable (rate limits, Google's errors, the network, after the client's own retries)
is retried with backoff; past the retries, beat's daily renewal tries again while the watch
still has two days to run.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from messages.models import Account

from .client import GmailUnavailable
from .watch import gmail_watch_start, gmail_watch_stop, watches_due

RETRY: dict[str, Any] = {
    "autoretry_for": (GmailUnavailable,),
    "retry_backoff": 60,
    "retry_backoff_max": 60 * 60,
    "retry_jitter": True,
    "max_retries": 6,
}


@shared_task(name="gmail_sync.watch_account", **RETRY)
def watch_account(account_id: int) -> str:
    account = Account.objects.filter(pk=account_id, provider=Account.Provider.GMAIL).first()
    return "gone" if account is None else gmail_watch_start(account)


@shared_task(name="gmail_sync.stop_watch", **RETRY)
def stop_watch(account_id: int) -> str:
    account = Account.objects.filter(pk=account_id, provider=Account.Provider.GMAIL).first()
    if account is None or account.status == Account.Status.ACTIVE:
        return "gone" if account is None else "active"
    return gmail_watch_stop(account)


@shared_task(name="gmail_sync.renew_watches")
def renew_watches() -> dict[str, int]:
    """Beat, daily: a watch task per active account whose watch ends within two days (or
    that has none), a stop per paused or deleted one still watched."""
    due = watches_due()
    for account_id in due.start:
        watch_account.delay(account_id)
    for account_id in due.stop:
        stop_watch.delay(account_id)
    return {"watch": len(due.start), "stop": len(due.stop)}
