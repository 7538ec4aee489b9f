"""IMAP sync against a real Dovecot: the store ends identical to the server, whatever happens."""

import io

import pytest
from django.core.management import call_command

from messages.models import Account, Folder, Message, SyncRun
from smtp_sync.imap import ImapAuthError, ImapConnectError, ImapConnection
from smtp_sync.services import imap_sync_account
from smtp_sync.sync import ImapAccountSync
from tests.conftest import corpus_files
from tests.imap_fixtures import assert_store_matches_server
from tests.mailfactory import make_mail

pytestmark = pytest.mark.django_db(transaction=True)


def mails(prefix: str, count: int, **kwargs) -> list[bytes]:
    return [
        make_mail(f"{prefix} {i}", message_id=f"<{prefix}-{i}@example.org>", minutes=i, **kwargs)
        for i in range(count)
    ]


def sync(account, full=False, **kwargs):
    return ImapAccountSync(Account.objects.get(pk=account.pk), **kwargs).sync(full=full)


@pytest.fixture
def seeded(imap_user):
    with imap_user.client() as c:
        c.create_folder("Work")
        c.create_folder("Work/Projects")
    imap_user.append("INBOX", *mails("inbox", 5))
    imap_user.append("INBOX", *mails("read", 2), flags=("\\Seen",))
    imap_user.append("Archive", *mails("old", 3), flags=("\\Seen", "\\Flagged"))
    imap_user.append(
        "Work/Projects", *mails("proj", 2, attachments=[("a.txt", "text/plain", b"x")])
    )
    imap_user.append("Sent", *mails("sent", 1), flags=("\\Seen",))
    return imap_user


def test_full_sync_of_several_folders(imap_account, seeded):
    report = sync(imap_account)
    assert report.done and report.new == 13
    assert_store_matches_server(imap_account, seeded)
    roles = dict(Folder.objects.filter(account=imap_account).values_list("name", "role"))
    assert roles["INBOX"] == "inbox" and roles["Sent"] == "sent" and roles["Archive"] == "archive"
    assert roles["Junk"] == "spam" and roles["Work/Projects"] == "custom"
    projects = Folder.objects.get(account=imap_account, name="Work/Projects")
    assert (projects.parent.name, projects.display_name, projects.delimiter) == (
        "Work",
        "Projects",
        "/",
    )
    run = SyncRun.objects.filter(account=imap_account).latest("started_at")
    assert (run.status, run.created, run.progress_done, run.progress_total) == (
        "succeeded",
        13,
        13,
        13,
    )
    assert Message.objects.filter(account=imap_account, has_attachments=True).count() == 2


def test_new_mail_and_no_change_sync(imap_account, seeded):
    sync(imap_account)
    seeded.append("INBOX", *mails("fresh", 2))
    report = sync(imap_account)
    assert report.new == 2
    assert_store_matches_server(imap_account, seeded)
    quiet = sync(imap_account)
    assert (quiet.new, quiet.flag_changes, quiet.removed_locations) == (0, 0, 0)


def test_flag_changes_on_the_server_reach_the_store(imap_account, seeded):
    sync(imap_account)
    with seeded.client() as c:
        c.select_folder("INBOX")
        uids = c.search(["ALL"])
        c.add_flags(uids[:2], [b"\\Seen", b"\\Flagged"])
        c.remove_flags(uids[5:], [b"\\Seen"])
    report = sync(imap_account)
    assert report.flag_changes == 4
    assert_store_matches_server(imap_account, seeded)


def test_flag_changes_without_condstore_are_found_by_rescan(imap_account, seeded, monkeypatch):
    monkeypatch.setattr(ImapConnection, "ignored_capabilities", frozenset({"CONDSTORE", "QRESYNC"}))
    sync(imap_account)
    with seeded.client() as c:
        c.select_folder("Archive")
        c.remove_flags(c.search(["ALL"]), [b"\\Flagged"])
        c.select_folder("INBOX")
        c.delete_messages(c.search(["ALL"])[:1])
        c.expunge()
    report = sync(imap_account)
    assert report.flag_changes == 3 and report.deleted_messages == 1
    assert_store_matches_server(imap_account, seeded)


def test_expunged_message_is_deleted(imap_account, seeded):
    sync(imap_account)
    with seeded.client() as c:
        c.select_folder("INBOX")
        c.delete_messages(c.search(["ALL"])[:3])
        c.expunge()
    report = sync(imap_account)
    assert report.deleted_messages == 3
    assert_store_matches_server(imap_account, seeded)


def test_moved_message_keeps_its_identity(imap_account, seeded):
    sync(imap_account)
    with seeded.client() as c:
        c.select_folder("INBOX")
        uid = c.search(["SUBJECT", "inbox 0"])[0]
        c.move([uid], "Archive")
    before = Message.objects.get(account=imap_account, subject="inbox 0")
    report = sync(imap_account)
    after = Message.objects.get(account=imap_account, subject="inbox 0")
    assert after.pk == before.pk
    assert list(after.locations.values_list("folder__name", flat=True)) == ["Archive"]
    assert report.deleted_messages == 0
    assert_store_matches_server(imap_account, seeded)


def test_uidvalidity_change_remaps_without_duplicates(imap_account, seeded):
    sync(imap_account)
    ids_before = set(Message.objects.filter(account=imap_account).values_list("id", flat=True))
    with seeded.client() as c:
        c.delete_folder("Archive")
        c.create_folder("Archive")
    seeded.append("Archive", *mails("old", 3), flags=("\\Seen", "\\Flagged"))
    sync(imap_account)
    assert_store_matches_server(imap_account, seeded)
    ids_after = set(Message.objects.filter(account=imap_account).values_list("id", flat=True))
    assert ids_after == ids_before, "the same messages, re-mapped to their new UIDs"


def test_connection_killed_mid_sync_then_resumed(imap_account, seeded, settings):
    settings.IMAP_FETCH_BATCH = 2
    connections = []

    class Recording(ImapConnection):
        killed = False

        def connect(self):
            super().connect()
            connections.append(self)

    def kill_connection():  # once: the batch fetched ahead may still be written after it
        if len(connections) == 1 and not connections[0].killed:
            connections[0].imap._imap.sock.shutdown(2)
            connections[0].killed = True

    with pytest.raises(ImapConnectError):
        sync(imap_account, connection_factory=Recording, after_batch=kill_connection)
    assert 0 < Message.objects.filter(account=imap_account).count() < 13
    account = Account.objects.get(pk=imap_account.pk)
    assert "lost" in account.last_error
    report = sync(imap_account)
    assert report.done
    assert_store_matches_server(imap_account, seeded)
    assert Account.objects.get(pk=imap_account.pk).last_error == ""


def test_crash_mid_sync_resumes_without_refetching(imap_account, seeded, settings):
    settings.IMAP_FETCH_BATCH = 3
    calls = {"n": 0}

    def crash_after_two_batches():
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("worker died")

    with pytest.raises(RuntimeError):
        sync(imap_account, after_batch=crash_after_two_batches)
    stored = Message.objects.filter(account=imap_account).count()
    assert stored == 6
    report = sync(imap_account)
    assert report.new == 13 - stored, "only what was missing is fetched again"
    assert_store_matches_server(imap_account, seeded)


def test_long_sync_runs_in_bounded_chunks(imap_account, seeded, settings):
    settings.IMAP_FETCH_BATCH = 2
    chunks = 0
    while True:
        chunks += 1
        report = sync(imap_account, max_messages=4)
        if report.done:
            break
        assert chunks < 10
    assert chunks >= 3
    assert_store_matches_server(imap_account, seeded)


def test_wrong_password_marks_the_account(imap_account, seeded):
    credentials = imap_account.get_credentials()
    imap_account.set_credentials({**credentials, "password": "wrong"})
    imap_account.save()
    with pytest.raises(ImapAuthError):
        sync(imap_account)
    account = Account.objects.get(pk=imap_account.pk)
    assert account.status == Account.Status.AUTH_ERROR
    assert "AUTHENTICATIONFAILED" in account.last_error or "failed" in account.last_error.lower()
    assert "wrong" not in account.last_error
    assert imap_sync_account(account.pk) is not None  # paused by status: no retry storm
    assert SyncRun.objects.filter(account=account).count() == 1


def test_whole_corpus_on_the_server_is_stored(imap_account, imap_user):
    raws = [f.read_bytes() for f in corpus_files()]
    # Dovecot refuses to store an empty message; every other corpus file goes on the server.
    imap_user.append("INBOX", *[raw for raw in raws if raw])
    report = sync(imap_account)
    assert report.done
    assert_store_matches_server(imap_account, imap_user)


def test_attachments_as_metadata_only(imap_account, seeded):
    imap_account.sync_settings = {"includeAttachments": False}
    imap_account.save()
    sync(imap_account)
    attachments = [
        a for m in Message.objects.filter(account=imap_account) for a in m.attachments.all()
    ]
    assert attachments and not any(a.is_stored for a in attachments)


def test_skipped_folders_are_not_synced(imap_account, seeded):
    imap_account.sync_settings = {"skipFolders": ["Archive"]}
    imap_account.save()
    sync(imap_account)
    assert not Message.objects.filter(account=imap_account, subject__startswith="old").exists()


def test_sync_account_command(imap_account, seeded):
    out = io.StringIO()
    call_command("sync_account", imap_account.email_address, stdout=out, stderr=io.StringIO())
    assert "13 new messages" in out.getvalue()
    assert_store_matches_server(imap_account, seeded)


def test_date_window_first_then_backfill(imap_account, imap_user):
    from datetime import UTC, datetime, timedelta

    with imap_user.client() as c:
        old = datetime.now(UTC) - timedelta(days=400)
        for i in range(3):
            c.append("INBOX", make_mail(f"ancient {i}", message_id=f"<anc{i}@x>"), msg_time=old)
        c.append("INBOX", make_mail("recent", message_id="<recent@x>"))
    imap_account.sync_settings = {"windowDays": 90}
    imap_account.save()
    sync(imap_account, full=True)
    subjects = set(Message.objects.filter(account=imap_account).values_list("subject", flat=True))
    assert subjects == {"recent"}
    imap_account.sync_settings = {"windowDays": 90, "backfill": True}
    imap_account.save()
    sync(imap_account, full=True)
    assert_store_matches_server(imap_account, imap_user)


def test_connection_errors_are_told_apart(dovecot, imap_user):
    from smtp_sync.accounts import imap_connection_test
    from smtp_sync.imap import ImapServer

    host, port, _ = dovecot
    cases = {
        "not found": ImapServer("no-such-host.invalid", port, "none", "u", "p", timeout=5),
        "refused": ImapServer(host, 1, "none", "u", "p", timeout=5),
        "TLS failure": ImapServer(host, port, "ssl", "u", "p", timeout=5),
    }
    for expected, server in cases.items():
        with pytest.raises(ImapConnectError, match=expected):
            imap_connection_test(server)
    wrong = ImapServer(host, port, "none", imap_user.username, "not-the-password", timeout=5)
    with pytest.raises(ImapAuthError, match="AUTHENTICATIONFAILED"):
        imap_connection_test(wrong)


def test_admin_adds_an_imap_account_after_testing_it(client, django_user_model, user, imap_user):
    from django.urls import reverse

    from smtp_sync.models import ImapSettings

    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")
    client.force_login(admin)
    url = reverse("admin:smtp_sync_imapsettings_add")
    form = {
        "owner": user.pk,
        "email_address": "new@example.com",
        "imap_host": imap_user.host,
        "imap_port": imap_user.port,
        "imap_security": "none",
        "username": imap_user.username,
        "password": "wrong-password",
        "smtp_port": 465,
        "smtp_security": "ssl",
    }
    refused = client.post(url, form)
    assert refused.status_code == 200
    assert "Connection test failed" in refused.content.decode()
    assert not Account.objects.filter(email_address="new@example.com").exists()
    response = client.post(url, {**form, "password": imap_user.password})
    assert response.status_code == 302, response.content.decode()[:3000]
    account = Account.objects.get(email_address="new@example.com")
    assert account.get_credentials() == {"password": imap_user.password}
    page = client.get(reverse("admin:smtp_sync_imapsettings_change", args=[account.pk]))
    assert imap_user.password not in page.content.decode()
    assert ImapSettings.objects.get(account=account).username == imap_user.username


@pytest.mark.parametrize(
    "payload", [{}, {"accountId": "x"}, "not an object", {"accountId": 1, "options": 5}]
)
def test_malformed_full_sync_payload_is_dead_lettered(payload):
    from messages.models import DeadLetter
    from smtp_sync.tasks import full_sync

    outcome = full_sync.apply(args=[payload]).get()
    letter = DeadLetter.objects.get()
    assert outcome["deadLetter"] == letter.pk
    assert "EmailFullSync payload unreadable" in letter.reason


def test_a_big_message_is_fetched_in_pieces_and_stored_whole(
    imap_account, imap_user, settings, monkeypatch
):
    import hashlib

    from smtp_sync import imap

    settings.LARGE_MESSAGE_BYTES = 1024 * 1024
    monkeypatch.setattr(imap, "FETCH_PIECE_BYTES", 256 * 1024)
    payload = bytes(range(256)) * 8 * 1024
    big = make_mail("Big", attachments=[("data.bin", "application/octet-stream", payload)])
    imap_user.append("INBOX", *mails("small", 2))
    imap_user.append("INBOX", big, flags=("\\Flagged",))
    assert len(big) > 2 * 1024 * 1024

    report = sync(imap_account, full=True)
    assert report.done and report.new == 3
    assert_store_matches_server(imap_account, imap_user)
    message = Message.objects.get(account=imap_account, subject="Big")
    content = message.raw.content()  # the server's bytes (CRLF), and their sha matches it
    assert message.is_flagged and message.raw.file and content.replace(b"\r\n", b"\n") == big
    assert hashlib.sha256(content).hexdigest() == message.raw.sha256
    [attachment] = message.attachments.all()
    assert attachment.sha256 == hashlib.sha256(payload).hexdigest()
    assert attachment.file.read() == payload
