"""Which account and sync run a log line belongs to, on every line logged while they are known.

The ids live in context variables: a Celery task that names an account (an `account_id`
argument, or an EmailFullSync / EmailNewMessage payload's `accountId` and `syncRunId`) sets them
for its run (`celery_signals.py`), a sync pass adds its run's id when it starts it
(`messages.services.sync_run_start`), and `SyncContextFilter`, on the console handler, copies
them onto each record: JSON logs show them as fields, a plain format may name them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

account_id_var: ContextVar[int | None] = ContextVar("log_account_id", default=None)
sync_run_id_var: ContextVar[int | None] = ContextVar("log_sync_run_id", default=None)


class SyncContextFilter(logging.Filter):
    """Adds account_id and sync_run_id to records logged while they are set (else nothing)."""

    def filter(self, record: logging.LogRecord) -> bool:
        account_id = account_id_var.get()
        if account_id is not None and not hasattr(record, "account_id"):
            record.account_id = account_id
        sync_run_id = sync_run_id_var.get()
        if sync_run_id is not None and not hasattr(record, "sync_run_id"):
            record.sync_run_id = sync_run_id
        return True


@contextmanager
def log_context(*, account_id: int | None = None, sync_run_id: int | None = None) -> Iterator[None]:
    """Lines logged inside carry these ids (the enclosing ones where None, but never another
    account's run); on the way out both are as they were, a run bound inside (`sync_run_bind`)
    included."""
    enclosing = account_id_var.get()
    account = account_id or enclosing
    run = sync_run_id or (sync_run_id_var.get() if account == enclosing else None)
    tokens = [
        (account_id_var, account_id_var.set(account)),
        (sync_run_id_var, sync_run_id_var.set(run)),
    ]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def sync_run_bind(sync_run_id: int) -> None:
    """From here on in this context (a task's run, a thread), lines carry this sync run's id:
    a pass starts its run deep inside; the task's context (`celery_signals`) ends it. Outside
    an account's context (`log_context`, a task naming an account) nothing would end it: not
    bound, so it cannot tag a later, unrelated line."""
    if account_id_var.get() is not None:
        sync_run_id_var.set(sync_run_id)


def context_clear() -> None:
    account_id_var.set(None)
    sync_run_id_var.set(None)
