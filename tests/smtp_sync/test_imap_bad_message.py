"""IMAP sync against a real Dovecot: one message that cannot be stored never stops the folder."""

from __future__ import annotations

import pytest
from django.db import OperationalError

from messages.models import Account, DeadLetter, Folder, Message, SyncRun
from smtp_sync.sync import DEAD_LETTER_UIDS, ImapAccountSync
from tests.imap_fixtures import assert_store_matches_server
from tests.mailfactory import make_mail
from tests.messages.test_ingest_isolation import (
    BAD_ID,
    batch_with_one_bad,
    rows_fail_for_bad,
    threading_fails_for_bad,
)
from tests.messages.test_mime_robustness import RFC2231_CHARSET

pytestmark = pytest.mark.django_db(transaction=True)


def sync(account, full=False):
    return ImapAccountSync(Account.objects.get(pk=account.pk)).sync(full=full)


def latest_run(account) -> SyncRun:
    return SyncRun.objects.filter(account=account).latest("started_at")


def test_rfc2231_charset_message_syncs_with_its_folder(imap_account, imap_user):
    imap_user.append("INBOX", make_mail("first"), RFC2231_CHARSET, make_mail("last", minutes=3))
    report = sync(imap_account)
    assert report.done and report.new == 3
    assert_store_matches_server(imap_account, imap_user)
    assert Message.objects.get(subject="charset star").body_text == "Café at noon.\n"
    assert Folder.objects.get(account=imap_account, name="INBOX").sync_state["complete"]
    account = Account.objects.get(pk=imap_account.pk)
    assert (account.status, account.last_error) == ("active", "")


def test_a_dead_lettered_message_is_handled_once_and_the_folder_completes(
    imap_account, imap_user, monkeypatch
):
    imap_user.append("INBOX", *batch_with_one_bad())
    rows_fail_for_bad(monkeypatch)
    report = sync(imap_account, full=True)
    assert report.done and report.new == 5
    letter = DeadLetter.objects.get()
    assert (letter.payload["folders"], letter.payload["uid"]) == (["INBOX"], 4)
    inbox = Folder.objects.get(account=imap_account, name="INBOX")
    assert inbox.sync_state == {"complete": True, DEAD_LETTER_UIDS: [4]}
    account = Account.objects.get(pk=imap_account.pk)
    assert account.last_error == (
        "INBOX: 1 message could not be stored: RuntimeError: injected failure "
        f"(dead letter #{letter.pk})"
    )
    assert latest_run(imap_account).status == "succeeded"

    imap_user.append("INBOX", make_mail("later", message_id="<later@example.org>"))
    assert sync(imap_account).new == 1, "incremental sync goes on"
    assert sync(imap_account, full=True).new == 0, "the dead-lettered UID is not re-fetched"
    assert DeadLetter.objects.count() == 1
    assert not Message.objects.filter(message_id_header=BAD_ID).exists()


def test_a_message_whose_threading_fails_is_stored_damaged(imap_account, imap_user, monkeypatch):
    imap_user.append("INBOX", *batch_with_one_bad())
    threading_fails_for_bad(monkeypatch)
    report = sync(imap_account)
    assert report.done and report.new == 6
    assert_store_matches_server(imap_account, imap_user)
    run = latest_run(imap_account)
    assert (run.status, run.created, run.damaged) == ("succeeded", 6, 1)
    account = Account.objects.get(pk=imap_account.pk)
    assert account.last_error == "INBOX: 1 message stored as damaged: RuntimeError: threader bug"
    assert DeadLetter.objects.count() == 0


def test_an_infrastructure_error_stops_the_sync_and_splits_nothing(
    imap_account, imap_user, monkeypatch
):
    imap_user.append("INBOX", *batch_with_one_bad())
    threading_fails_for_bad(monkeypatch, OperationalError("connection lost"))
    with pytest.raises(OperationalError):
        sync(imap_account)
    assert Message.objects.count() == DeadLetter.objects.count() == 0
    # The run stays "running": its work is handed on to the task's retry, or to the watchdog
    # once the account's lock is gone (smtp_sync.watchdog).
    assert latest_run(imap_account).status == "running"
    assert not Folder.objects.get(account=imap_account, name="INBOX").sync_state.get("complete")
