"""The INBOX-only pass an IDLE notice asks for: new INBOX mail, no LIST; the folders it skips
are the next whole pass's (the poll's)."""

import pytest

from emailplatform import syncstate
from messages.models import Folder, Message, SyncRun
from smtp_sync.services import imap_sync_account
from smtp_sync.sync import ImapAccountSync
from tests.mailfactory import make_mail

pytestmark = pytest.mark.django_db(transaction=True)


def folder_names(account) -> set[str]:
    return set(Folder.objects.filter(account=account).values_list("name", flat=True))


def subjects(account) -> set[str]:
    return set(Message.objects.filter(account=account).values_list("subject", flat=True))


def run_wanted(account, *kinds: str):
    """Run the account's sync as a task does: what the recorded wants say."""
    syncstate.want(account.pk, *kinds)
    return imap_sync_account(account.pk, request=False)


def test_an_inbox_pass_stores_new_mail_and_leaves_folder_changes_to_the_next_pass(
    imap_account, imap_user
):
    with imap_user.client() as c:
        c.create_folder("Old")
    imap_user.append("Old", make_mail("kept in Old"))
    ImapAccountSync(imap_account).sync(full=True)
    with imap_user.client() as c:
        c.delete_folder("Old")
        c.create_folder("New")
    imap_user.append("New", make_mail("in New"))
    imap_user.append("INBOX", make_mail("pushed"))

    report = run_wanted(imap_account, syncstate.INBOX)

    assert report.done and report.passes == 1
    assert "pushed" in subjects(imap_account)
    assert {"Old", "New"} & folder_names(imap_account) == {"Old"}  # no LIST in this pass
    assert SyncRun.objects.filter(account=imap_account).latest("pk").kind == "incremental"

    run_wanted(imap_account, syncstate.INCREMENTAL)  # the poll

    assert {"Old", "New"} & folder_names(imap_account) == {"New"}
    assert "in New" in subjects(imap_account)
    assert "kept in Old" not in subjects(imap_account)


def test_an_inbox_want_with_another_makes_a_whole_pass(imap_account, imap_user):
    ImapAccountSync(imap_account).sync(full=True)
    with imap_user.client() as c:
        c.create_folder("New")
    imap_user.append("New", make_mail("in New"))
    imap_user.append("INBOX", make_mail("pushed"))

    run_wanted(imap_account, syncstate.INBOX, syncstate.INCREMENTAL)

    assert {"pushed", "in New"} <= subjects(imap_account)


def test_an_inbox_pass_of_an_account_never_synced_syncs_every_folder(imap_account, imap_user):
    with imap_user.client() as c:
        c.create_folder("Work")
    imap_user.append("Work", make_mail("work mail"))
    imap_user.append("INBOX", make_mail("inbox mail"))

    report = run_wanted(imap_account, syncstate.INBOX)

    assert report.done
    assert {"work mail", "inbox mail"} <= subjects(imap_account)
    assert {"INBOX", "Work"} <= folder_names(imap_account)
