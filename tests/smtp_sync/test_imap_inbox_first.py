"""An incremental pass syncs the INBOX first, before LIST and the other folders (new mail is
what IDLE reports and what a user waits for), and still syncs every folder."""

import pytest

from messages.models import Folder, Message
from smtp_sync.imap import ImapConnection
from smtp_sync.sync import ImapAccountSync
from tests.mailfactory import make_mail

pytestmark = pytest.mark.django_db(transaction=True)


def recording(commands: list[str]):
    """A connection factory whose sessions note LIST and SELECT, in order."""

    class Recording(ImapConnection):
        def list_folders(self):
            commands.append("LIST")
            return super().list_folders()

        def select(self, folder: str, readonly: bool = True):
            commands.append(f"SELECT {folder}")
            return super().select(folder, readonly)

    return Recording


def subjects(account) -> set[str]:
    return set(Message.objects.filter(account=account).values_list("subject", flat=True))


def folder_names(account) -> set[str]:
    return set(Folder.objects.filter(account=account).values_list("name", flat=True))


def test_an_incremental_pass_syncs_the_inbox_before_listing_folders(imap_account, imap_user):
    with imap_user.client() as c:
        c.create_folder("Work")
        c.create_folder("Old")
    ImapAccountSync(imap_account).sync(full=True)
    with imap_user.client() as c:
        c.delete_folder("Old")
        c.create_folder("New")
    imap_user.append("New", make_mail("in New"))
    imap_user.append("Work", make_mail("in Work"))
    imap_user.append("INBOX", make_mail("pushed"))
    commands: list[str] = []

    report = ImapAccountSync(imap_account, connection_factory=recording(commands)).sync()

    assert report.done
    assert commands[:2] == ["SELECT INBOX", "LIST"]
    assert commands.count("SELECT INBOX") == 1
    assert {"pushed", "in Work", "in New"} <= subjects(imap_account)
    assert {"INBOX", "Work", "New"} <= folder_names(imap_account)
    assert "Old" not in folder_names(imap_account)


def test_a_pass_of_an_inbox_not_yet_synced_lists_folders_first(imap_account, imap_user):
    with imap_user.client() as c:
        c.create_folder("Work")
    imap_user.append("Work", make_mail("work mail"))
    imap_user.append("INBOX", make_mail("inbox mail"))
    commands: list[str] = []

    report = ImapAccountSync(imap_account, connection_factory=recording(commands)).sync()

    assert report.done
    assert commands[0] == "LIST"
    assert {"work mail", "inbox mail"} <= subjects(imap_account)
