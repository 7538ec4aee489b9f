"""Entry points shared by tasks and management commands: the same code path for both."""

from __future__ import annotations

import time
from collections.abc import Callable

from emailplatform import syncstate
from emailplatform.synclock import account_sync_lock
from messages.models import Account, SyncRun
from messages.services import sync_runs_interrupt

from .sync import ImapAccountSync, SyncReport

MAX_COALESCED_PASSES = 3


def imap_sync_account(
    account_id: int,
    *,
    full: bool = False,
    max_messages: int | None = None,
    max_seconds: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    options: dict | None = None,
    request: bool = True,
    retry_errors: tuple[type[BaseException], ...] = (),
) -> SyncReport | None:
    """Sync one IMAP account under its lock; None when another sync runs (it will do this).

    The passes run are what the account's wants say (`emailplatform.syncstate`): REQUEST
    records a want of this call's own kind first (a management command, a retry, a trigger
    that did not come through `topics.publish_sync`); a task enqueued by `publish_sync` passes
    request=False and runs only what is still owed, so a duplicate or stale task does nothing
    (and returns a report with `passes == 0`).

    Before each pass the holder takes every want (a full want makes it a full pass); up to
    MAX_COALESCED_PASSES passes run, sharing MAX_SECONDS; a pass that pauses at its checkpoint
    leaves a "continue" want, which the lock's release publishes on the full-sync queue.
    When a pass fails on one of RETRY_ERRORS (the caller will retry), its wants are put back.
    """
    account = Account.objects.filter(pk=account_id).first()
    if account is None:
        syncstate.forget_account(account_id)
        raise Account.DoesNotExist(f"account {account_id} does not exist")
    if account.status not in (Account.Status.ACTIVE, Account.Status.ERROR):
        syncstate.forget_account(account_id)  # parked: what was asked waits for reactivation
        return SyncReport(done=True, passes=0)
    if request:
        syncstate.want(account_id, syncstate.FULL if full else syncstate.INCREMENTAL)
    deadline = time.monotonic() + max_seconds if max_seconds else None
    with account_sync_lock(account_id) as lock:
        if lock is None:
            return None
        # We hold the lock: any other run of this account still marked running is dead.
        sync_runs_interrupt(
            account_id=account_id, kinds=[SyncRun.Kind.FULL, SyncRun.Kind.INCREMENTAL]
        )
        report: SyncReport | None = None
        for _ in range(MAX_COALESCED_PASSES):
            wants = lock.take_wants()
            if not wants:
                break
            remaining = max(1.0, deadline - time.monotonic()) if deadline else None
            sync = ImapAccountSync(
                account,
                max_messages=max_messages,
                max_seconds=remaining,
                progress=progress,
                after_batch=lock.extend,
                options=options,
            )
            try:
                pass_report = sync.sync(
                    full=syncstate.FULL in wants, continuing=syncstate.CONTINUE in wants
                )
            except retry_errors:
                # The caller retries with backoff: keep what was asked for its retry, and do
                # not publish it again at the release (that would skip the backoff).
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
        return report or SyncReport(done=True, passes=0)


def _put_back(lock, wants: set[str]) -> None:
    try:
        lock.want(*wants)
    except Exception:  # Redis is what failed: the caller's retry requests its own kind again
        return
