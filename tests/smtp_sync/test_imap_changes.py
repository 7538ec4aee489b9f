"""Changes made by a client reach the IMAP server, and the store then mirrors the server."""

import pytest

from messages.models import Account, Message
from smtp_sync.changes import ChangeError, imap_message_change
from smtp_sync.sync import ImapAccountSync
from smtp_sync.tasks import apply_message_change
from tests.imap_fixtures import assert_store_matches_server
from tests.mailfactory import make_mail

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def synced(imap_account, imap_user):
    imap_user.append("INBOX", make_mail("one", message_id="<one@x>"))
    imap_user.append("INBOX", make_mail("two", message_id="<two@x>"), flags=("\\Seen",))
    ImapAccountSync(imap_account).sync()
    return imap_account


def server_flags(imap_user, folder, subject):
    with imap_user.client() as c:
        c.select_folder(folder, readonly=True)
        uids = c.search(["SUBJECT", subject])
        return {f.decode() for f in c.get_flags(uids)[uids[0]]} if uids else None


def test_mark_read_and_flagged(synced, imap_user):
    message = Message.objects.get(account=synced, subject="one")
    imap_message_change(message.pk, {"read": True, "flagged": True})
    assert {"\\Seen", "\\Flagged"} <= server_flags(imap_user, "INBOX", "one")
    message.refresh_from_db()
    assert message.is_read and message.is_flagged
    imap_message_change(message.pk, {"read": False})
    assert "\\Seen" not in server_flags(imap_user, "INBOX", "one")
    assert_store_matches_server(synced, imap_user)


def test_move_to_a_folder_and_to_trash(synced, imap_user):
    message = Message.objects.get(account=synced, subject="two")
    imap_message_change(message.pk, {"folder": "Archive"})
    assert server_flags(imap_user, "INBOX", "two") is None
    assert server_flags(imap_user, "Archive", "two") is not None
    moved = Message.objects.get(account=synced, subject="two")
    assert moved.pk == message.pk
    assert list(moved.locations.values_list("folder__name", flat=True)) == ["Archive"]
    imap_message_change(message.pk, {"trash": True})
    assert list(moved.locations.values_list("folder__name", flat=True)) == ["Trash"]
    assert_store_matches_server(synced, imap_user)


def test_unknown_folder_is_refused_and_shown_on_the_account(synced):
    message = Message.objects.get(account=synced, subject="one")
    with pytest.raises(ChangeError, match="no folder named 'Nope'"):
        imap_message_change(message.pk, {"folder": "Nope"})
    outcome = apply_message_change.apply(args=[synced.pk, message.pk, {"folder": "Nope"}]).get()
    assert "Nope" in outcome["error"]
    assert "Nope" in Account.objects.get(pk=synced.pk).last_error
