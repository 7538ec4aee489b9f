"""Sync log lines name their account and run outside Celery too (`manage.py sync_account`)."""

from __future__ import annotations

import logging

import pytest

from emailplatform.observability.logcontext import (
    SyncContextFilter,
    account_id_var,
    context_clear,
    sync_run_id_var,
)
from messages.models import SyncRun
from smtp_sync.services import imap_sync_account
from tests.mailfactory import make_mail

pytestmark = pytest.mark.django_db


def test_a_sync_run_from_a_command_logs_its_ids(caplog, imap_user, imap_account):
    imap_user.append("INBOX", make_mail("one", message_id="<one@x>"))
    context_clear()  # as a fresh process (or a task's start) is
    caplog.handler.addFilter(SyncContextFilter())
    with caplog.at_level(logging.INFO):
        imap_sync_account(imap_account.pk, full=True)
    run = SyncRun.objects.get(account=imap_account)
    sync_lines = [r for r in caplog.records if r.name.startswith(("smtp_sync", "messages"))]
    assert sync_lines, [r.getMessage() for r in caplog.records]
    assert all(getattr(r, "account_id", None) == imap_account.pk for r in sync_lines)
    assert any(getattr(r, "sync_run_id", None) == run.pk for r in sync_lines)
    # Once the sync returns, later lines of the process name neither.
    assert account_id_var.get() is None and sync_run_id_var.get() is None
