"""Message identity against a real Dovecot: a message the store has is never downloaded again
for a move, a copy or a UIDVALIDITY change; a different message is never taken for it."""

from datetime import UTC, datetime

import pytest

from messages.models import Account, ChangeEvent, Folder, Message
from smtp_sync.imap import ImapConnection
from smtp_sync.sync import ImapAccountSync
from tests.gmail_imap_fake import GmailImapFake, GmailMessage
from tests.imap_fixtures import account_for, assert_store_matches_server
from tests.mailfactory import make_mail
from tests.objectid_imap_fake import ObjectIdImapFake

pytestmark = pytest.mark.django_db(transaction=True)


def mails(prefix: str, count: int) -> list[bytes]:
    return [
        make_mail(f"{prefix} {i}", message_id=f"<{prefix}-{i}@example.org>", minutes=i)
        for i in range(count)
    ]


class Sessions:
    """A connection factory that remembers its sessions, to count the bodies they fetched."""

    def __init__(self, *, server_ids: bool = True) -> None:
        self.opened: list[ImapConnection] = []
        sessions = self

        class Counting(ImapConnection):
            try_x_guid = server_ids

            def connect(self) -> None:
                super().connect()
                sessions.opened.append(self)

        self.factory = Counting

    @property
    def bodies(self) -> int:
        return sum(s.bodies_downloaded for s in self.opened)


def sync(account, sessions: Sessions | None = None, full: bool = False):
    sessions = sessions or Sessions()
    account = Account.objects.get(pk=account.pk)
    return ImapAccountSync(account, connection_factory=sessions.factory).sync(full=full)


def message_ids(account) -> set[int]:
    return set(Message.objects.filter(account=account).values_list("id", flat=True))


@pytest.fixture
def seeded(imap_user):
    with imap_user.client() as c:
        c.create_folder("Work")
    imap_user.append("INBOX", *mails("inbox", 12))
    imap_user.append("INBOX", *mails("read", 3), flags=("\\Seen",))
    imap_user.append("Work", *mails("work", 4), flags=("\\Flagged",))
    return imap_user


def test_a_uidvalidity_reset_remaps_every_message_without_downloading_one(
    imap_account, seeded, settings
):
    settings.IMAP_FETCH_BATCH = 5
    first = Sessions()
    sync(imap_account, first)
    assert first.bodies == 19
    stored = Message.objects.filter(account=imap_account)
    assert stored.filter(server_ids__0__startswith="guid:").count() == 19
    before = message_ids(imap_account)
    inbox = Folder.objects.get(account=imap_account, name="INBOX")
    with seeded.client() as c:
        c.select_folder("INBOX")
        c.add_flags(c.search(["SUBJECT", "inbox 3"]), [b"\\Flagged"])
    seeded.uidvalidity_reset("INBOX")
    last_event = ChangeEvent.objects.order_by("-id").values_list("id", flat=True).first()

    again = Sessions()
    report = sync(imap_account, again)

    assert again.bodies == 0
    assert (report.new, report.deleted_messages) == (0, 0)
    assert message_ids(imap_account) == before
    assert_store_matches_server(imap_account, seeded)
    inbox.refresh_from_db()
    with seeded.client() as c:
        status = c.folder_status("INBOX", [b"UIDVALIDITY"])
    assert inbox.uidvalidity == status[b"UIDVALIDITY"]
    assert min(inbox.locations.values_list("uid", flat=True)) == 1000
    assert Message.objects.get(account=imap_account, subject="inbox 3").is_flagged
    remapped = set(inbox.locations.values_list("message_id", flat=True))
    updated = ChangeEvent.objects.filter(
        id__gt=last_event, object_type="message", kind="updated"
    ).values_list("object_id", flat=True)
    assert remapped <= set(updated), "clients hear of every re-mapped message"


def test_a_move_and_a_copy_add_the_location_without_a_download(imap_account, seeded):
    sync(imap_account)
    before = message_ids(imap_account)
    with seeded.client() as c:
        c.select_folder("INBOX")
        c.move(c.search(["SUBJECT", "inbox 1"]), "Work")
        c.copy(c.search(["SUBJECT", "inbox 2"]), "Archive")
    sessions = Sessions()
    report = sync(imap_account, sessions)
    assert sessions.bodies == 0
    assert report.new == 0
    assert message_ids(imap_account) == before
    assert_store_matches_server(imap_account, seeded)
    copied = Message.objects.get(account=imap_account, subject="inbox 2")
    assert sorted(copied.locations.values_list("folder__name", flat=True)) == ["Archive", "INBOX"]


def test_identical_copies_under_ids_of_their_own_are_remapped_too(imap_account, imap_user):
    raw = make_mail("twice", message_id="<twice@example.org>")
    imap_user.append("INBOX", raw, raw)  # two files, two X-GUIDs, the same bytes
    first = Sessions()
    sync(imap_account, first)
    message = Message.objects.get(account=imap_account)
    assert len(message.server_ids) == 2 and message.locations.count() == 2
    imap_user.uidvalidity_reset("INBOX")
    again = Sessions()
    sync(imap_account, again)
    assert again.bodies == 0
    assert Message.objects.get(account=imap_account).pk == message.pk
    assert_store_matches_server(imap_account, imap_user)


def test_new_mail_is_still_downloaded_once(imap_account, seeded):
    sync(imap_account)
    seeded.append("INBOX", *mails("fresh", 3))
    sessions = Sessions()
    assert sync(imap_account, sessions).new == 3
    assert sessions.bodies == 3
    assert_store_matches_server(imap_account, seeded)


def test_another_message_with_the_same_message_id_and_another_size_is_not_merged(
    imap_account, imap_user
):
    when = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    original = make_mail("original", message_id="<same@example.org>", body="short\n")
    other = make_mail("other", message_id="<same@example.org>", body="a longer body\n")
    with imap_user.client() as c:
        c.append("INBOX", original, msg_time=when)
    without_ids = Sessions(server_ids=False)
    sync(imap_account, without_ids)
    with imap_user.client() as c:
        c.append("Archive", other, msg_time=when)
    sync(imap_account, without_ids)
    assert without_ids.bodies == 2
    assert Message.objects.filter(account=imap_account).count() == 2
    assert_store_matches_server(imap_account, imap_user)


def test_a_server_id_overrules_an_equal_message_id_size_and_date(imap_account, imap_user):
    when = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    one = make_mail("same size", message_id="<same@example.org>", body="aaaa\n")
    two = make_mail("same size", message_id="<same@example.org>", body="bbbb\n")
    assert len(one) == len(two)
    with imap_user.client() as c:
        c.append("INBOX", one, msg_time=when)
    sessions = Sessions()
    sync(imap_account, sessions)
    with imap_user.client() as c:
        c.append("Archive", two, msg_time=when)
    sync(imap_account, sessions)
    assert sessions.bodies == 2
    assert Message.objects.filter(account=imap_account).count() == 2
    assert_store_matches_server(imap_account, imap_user)


def test_without_server_ids_headers_remap_and_a_later_session_records_the_ids(imap_account, seeded):
    seeded.append("INBOX", make_mail("no id at all"))  # no Message-ID: downloaded again
    without_ids = Sessions(server_ids=False)
    sync(imap_account, without_ids)
    assert without_ids.opened[0].server_id_kind is None
    assert not Message.objects.filter(account=imap_account).exclude(server_ids=[]).exists()
    before = message_ids(imap_account)

    seeded.uidvalidity_reset("INBOX")
    again = Sessions(server_ids=False)
    sync(imap_account, again)
    assert again.bodies == 1
    assert message_ids(imap_account) == before
    assert_store_matches_server(imap_account, seeded)

    seeded.uidvalidity_reset("Work")
    with_ids = Sessions()
    sync(imap_account, with_ids)
    assert with_ids.bodies == 0
    assert message_ids(imap_account) == before
    work = Message.objects.filter(account=imap_account, locations__folder__name="Work")
    assert all(ids[0].startswith("guid:") for ids in work.values_list("server_ids", flat=True))
    assert_store_matches_server(imap_account, seeded)


@pytest.fixture
def objectid_account(user, imap_user, dovecot):
    host, port, _ = dovecot
    fake = ObjectIdImapFake((host, port))
    yield account_for(user, imap_user, port=fake.port)
    fake.close()


def test_rfc_8474_emailid_remaps_a_move_and_a_uidvalidity_change(objectid_account, seeded):
    sessions = Sessions()
    sync(objectid_account, sessions)
    assert sessions.opened[0].server_id_kind == "oid"
    server_ids = Message.objects.filter(account=objectid_account).values_list(
        "server_ids", flat=True
    )
    assert all(len(ids) == 1 and ids[0].startswith("oid:M") for ids in server_ids)
    before = message_ids(objectid_account)
    with seeded.client() as c:
        c.select_folder("INBOX")
        c.move(c.search(["SUBJECT", "inbox 4"]), "Work")
    seeded.uidvalidity_reset("INBOX")
    again = Sessions()
    sync(objectid_account, again)
    assert again.bodies == 0
    assert message_ids(objectid_account) == before
    assert_store_matches_server(objectid_account, seeded)


def test_gmail_labels_of_one_message_download_it_once(user, imap_user, dovecot):
    host, port, _ = dovecot
    gmail = GmailImapFake((host, port))
    try:
        account = account_for(user, imap_user, port=gmail.port)
        with imap_user.client() as c:
            c.create_folder("Work")
        raw = make_mail("Plan", message_id="<plan@example.org>")
        imap_user.append("INBOX", raw)
        imap_user.append("Work", raw)
        for folder in ("INBOX", "Work"):
            gmail.place(folder, 1, GmailMessage(1001, 5001, ("\\Inbox", "Work")))
        sessions = Sessions()
        sync(account, sessions, full=True)
    finally:
        gmail.close()
    assert sessions.bodies == 1
    message = Message.objects.get(account=account)
    assert message.server_ids == [message.provider_id] == ["gm:1001"]
    assert sorted(message.locations.values_list("folder__name", flat=True)) == ["INBOX", "Work"]
