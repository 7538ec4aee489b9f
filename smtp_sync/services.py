"""Entry points shared by tasks and management commands: the same code path for both."""

from __future__ import annotations

from collections.abc import Callable

from emailplatform import syncstate
from messages.sync_passes import account_sync_passes

from .sync import ImapAccountSync, SyncReport


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
    The passes, their coalescing and REQUEST: `messages.sync_passes.account_sync_passes`."""

    def run_pass(account, remaining, extend, wants) -> SyncReport:
        sync = ImapAccountSync(
            account,
            max_messages=max_messages,
            max_seconds=remaining,
            progress=progress,
            after_batch=extend,
            options=options,
        )
        return sync.sync(full=syncstate.FULL in wants, continuing=syncstate.CONTINUE in wants)

    return account_sync_passes(
        account_id,
        "imap",
        full=full,
        request=request,
        max_seconds=max_seconds,
        retry_errors=retry_errors,
        run_pass=run_pass,
        no_pass=lambda: SyncReport(done=True, passes=0),
    )
