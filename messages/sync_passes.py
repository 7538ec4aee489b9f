"""One account's sync under its lock, as every provider runs it (smtp_sync.services,
gmail_sync.services): the passes run are what the account's wants say (emailplatform.syncstate).

REQUEST records a want of the call's own kind first (a management command, a retry, a trigger
that did not come through `topics.publish_sync`); a task enqueued by `publish_sync` passes
request=False and runs only what is still owed, so a duplicate or stale task does nothing (its
report has `passes == 0`). Before each pass the holder takes every want (a full want makes it
a full pass); up to MAX_COALESCED_PASSES passes run, sharing MAX_SECONDS; a pass that pauses at
its checkpoint leaves a "continue" want, which the lock's release publishes on the full-sync
queue. When a pass fails on one of RETRY_ERRORS (the caller will retry with backoff), its wants
are put back for that retry and not published again at the release.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from emailplatform import syncstate
from emailplatform.observability.logcontext import log_context
from emailplatform.synclock import SyncLock, account_sync_lock

from .models import Account, SyncRun
from .services import sync_runs_interrupt

MAX_COALESCED_PASSES = 3


class PassReport(Protocol):
    done: bool
    passes: int

    def add(self, other: PassReport) -> None: ...


Report = TypeVar("Report", bound=PassReport)
# (account, seconds left or None, the lock's extend, the wants taken) -> the pass's report
RunPass = Callable[[Account, float | None, Callable[[], None], set[str]], Report]


def account_sync_passes(
    account_id: int,
    provider: str,
    *,
    full: bool,
    request: bool,
    max_seconds: float | None,
    retry_errors: tuple[type[BaseException], ...],
    run_pass: RunPass,
    no_pass: Callable[[], Report],
) -> Report | None:
    """Run RUN_PASS under the account's lock for what is owed; NO_PASS() when nothing ran
    (a parked or paused account, nothing owed), None when another sync holds the lock (it runs
    what was asked at its end). Raises Account.DoesNotExist. Lines logged meanwhile carry the
    account's id (and its run's, once a pass started one), from a task or a command alike."""
    with log_context(account_id=account_id):
        return _passes(
            account_id,
            provider,
            full=full,
            request=request,
            max_seconds=max_seconds,
            retry_errors=retry_errors,
            run_pass=run_pass,
            no_pass=no_pass,
        )


def _passes(
    account_id: int,
    provider: str,
    *,
    full: bool,
    request: bool,
    max_seconds: float | None,
    retry_errors: tuple[type[BaseException], ...],
    run_pass: RunPass,
    no_pass: Callable[[], Report],
) -> Report | None:
    account = Account.objects.filter(pk=account_id).first()
    if account is None:
        syncstate.forget_account(account_id)
        raise Account.DoesNotExist(f"account {account_id} does not exist")
    if account.status not in (Account.Status.ACTIVE, Account.Status.ERROR):
        syncstate.forget_account(account_id)  # parked: what was asked waits for reactivation
        return no_pass()
    if request:
        syncstate.want(account_id, syncstate.FULL if full else syncstate.INCREMENTAL)
    deadline = time.monotonic() + max_seconds if max_seconds else None
    with account_sync_lock(account_id, provider) as lock:
        if lock is None:
            return None
        # We hold the lock: any other run of this account still marked running is dead.
        sync_runs_interrupt(
            account_id=account_id, kinds=[SyncRun.Kind.FULL, SyncRun.Kind.INCREMENTAL]
        )
        report = None
        for _ in range(MAX_COALESCED_PASSES):
            wants = lock.take_wants()
            if not wants:
                break
            remaining = max(1.0, deadline - time.monotonic()) if deadline else None
            try:
                pass_report = run_pass(account, remaining, lock.extend, wants)
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
        return report if report is not None else no_pass()


def _put_back(lock: SyncLock, wants: set[str]) -> None:
    try:
        lock.want(*wants)
    except Exception:  # Redis is what failed: the caller's retry requests its own kind again
        return
