"""Entry points shared by tasks and tests: one Gmail account's sync under its lock."""

from __future__ import annotations

from emailplatform import syncstate
from messages.sync_passes import account_sync_passes

from .client import GmailClient
from .sync import GmailAccountSync, GmailSyncReport


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
    The passes, their coalescing and REQUEST: `messages.sync_passes.account_sync_passes`."""

    def run_pass(account, remaining, extend, wants) -> GmailSyncReport:
        sync = GmailAccountSync(
            account,
            client=client,
            max_messages=max_messages,
            max_seconds=remaining,
            after_batch=extend,
            options=options,
        )
        return sync.sync(full=syncstate.FULL in wants, continuing=syncstate.CONTINUE in wants)

    return account_sync_passes(
        account_id,
        "gmail",
        full=full,
        request=request,
        max_seconds=max_seconds,
        retry_errors=retry_errors,
        run_pass=run_pass,
        no_pass=lambda: GmailSyncReport(passes=0),
    )
