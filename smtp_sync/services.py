"""Entry points shared by tasks and management commands: the same code path for both."""

from __future__ import annotations

from collections.abc import Callable

from messages.models import Account

from .locks import account_sync_lock
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
) -> SyncReport | None:
    """Sync one IMAP account under its lock; None when another sync already runs (coalesced)."""
    account = Account.objects.get(pk=account_id)
    if account.status not in (Account.Status.ACTIVE, Account.Status.ERROR):
        return SyncReport(done=True)
    with account_sync_lock(account_id) as lock:
        if lock is None:
            return None
        report = SyncReport()
        for _ in range(MAX_COALESCED_PASSES):
            sync = ImapAccountSync(
                account,
                max_messages=max_messages,
                max_seconds=max_seconds,
                progress=progress,
                after_batch=lock.extend,
                options=options,
            )
            report.add(sync.sync(full=full))
            full = False
            if not report.done or not lock.take_pending():
                break
        return report
