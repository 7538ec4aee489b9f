"""Entry points shared by tasks and tests: one Gmail account's sync under its lock."""

from __future__ import annotations

import time

from emailplatform import syncstate
from emailplatform.synclock import SyncLock, account_sync_lock
from messages.models import Account, SyncRun
from messages.services import sync_runs_interrupt

from .client import GmailClient
from .sync import GmailAccountSync, GmailSyncReport

MAX_COALESCED_PASSES = 3


def gmail_sync_account(
    account_id: int,
    *,
    full: bool = False,
    max_messages: int | None = None,
    max_seconds: float | None = None,
    options: dict | None = None,
    request: bool = True,
    retry_errors: tuple[type[BaseException], ...] = (),
    client: GmailClient | None = None,
) -> GmailSyncReport | None:
    """Sync one Gmail account under its lock; None when another sync runs (it will do this).

    As `smtp_sync.services.imap_sync_account`: the passes run are what the account's wants
    say (`emailplatform.syncstate`); REQUEST records a want of this call's kind first, a task
    enqueued by `topics.publish_sync` passes request=False and runs only what is still owed.
    A pass that stops at its checkpoint leaves a "continue" want, which the lock's release
    publishes on the full-sync queue. On one of RETRY_ERRORS the wants are put back for the
    caller's retry. Raises Account.DoesNotExist."""
    account = Account.objects.filter(pk=account_id).first()
    if account is None:
        syncstate.forget_account(account_id)
        raise Account.DoesNotExist(f"account {account_id} does not exist")
    if account.status not in (Account.Status.ACTIVE, Account.Status.ERROR):
        syncstate.forget_account(account_id)  # parked or paused: nothing until it is active
        return GmailSyncReport(passes=0)
    if request:
        syncstate.want(account_id, syncstate.FULL if full else syncstate.INCREMENTAL)
    deadline = time.monotonic() + max_seconds if max_seconds else None
    with account_sync_lock(account_id, "gmail") as lock:
        if lock is None:
            return None
        sync_runs_interrupt(
            account_id=account_id, kinds=[SyncRun.Kind.FULL, SyncRun.Kind.INCREMENTAL]
        )
        report: GmailSyncReport | None = None
        for _ in range(MAX_COALESCED_PASSES):
            wants = lock.take_wants()
            if not wants:
                break
            remaining = max(1.0, deadline - time.monotonic()) if deadline else None
            sync = GmailAccountSync(
                account,
                client=client,
                max_messages=max_messages,
                max_seconds=remaining,
                after_batch=lock.extend,
                options=options,
            )
            try:
                pass_report = sync.sync(
                    full=syncstate.FULL in wants, continuing=syncstate.CONTINUE in wants
                )
            except retry_errors:
                lock.republish = False
                _put_back(lock, wants)
                raise
            if report is None:
                report = pass_report
            else:
                report.add(pass_report)
                report.passes += 1
            if not pass_report.done:
                lock.want(syncstate.CONTINUE)
                break
            if deadline is not None and time.monotonic() > deadline:
                break
        return report or GmailSyncReport(passes=0)


def _put_back(lock: SyncLock, wants: set[str]) -> None:
    try:
        lock.want(*wants)
    except Exception:  # Redis is what failed: the caller's retry requests its own kind again
        return
