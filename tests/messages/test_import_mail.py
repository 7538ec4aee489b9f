"""`import_mail`: .eml files, directories and mbox files, through the ingest service."""

import io
import mailbox
import pathlib
import re

import pytest
from django.core.management import CommandError, call_command

from messages.models import (
    Account,
    Attachment,
    Folder,
    Message,
    MessageLocation,
    RawMessage,
    SyncRun,
)
from tests.conftest import CORPUS_DIR
from tests.mailfactory import make_mail

pytestmark = pytest.mark.django_db

SUMMARY = re.compile(
    r"^Imported (\d+) messages?: (\d+) new, (\d+) already present, "
    r"(\d+) damaged \(parse defects recorded\)\.$"
)


def import_mail(*args: str) -> tuple[int, int, int, int]:
    """Run the command; return (read, new, already present, damaged) from its summary."""
    out = io.StringIO()
    call_command("import_mail", *args, stdout=out, stderr=io.StringIO())
    lines = out.getvalue().splitlines()
    assert len(lines) == 1, lines
    match = SUMMARY.match(lines[0])
    assert match, lines[0]
    return tuple(int(n) for n in match.groups())


def snapshot(account):
    messages = sorted(
        Message.objects.filter(account=account).values_list(
            "provider_id", "thread_id", "is_read", "subject", "updated_at"
        )
    )
    locations = sorted(
        MessageLocation.objects.filter(message__account=account).values_list(
            "message__provider_id", "folder__name", "uid"
        )
    )
    return messages, locations


def expected_raws(directory: pathlib.Path) -> set[bytes]:
    """What the import must store: each file, or each message of the files that are mboxes."""
    raws = set()
    for path in directory.rglob("*"):
        if not path.is_file() or path.name.startswith("."):
            continue
        data = path.read_bytes()
        if data.startswith(b"From "):
            box = mailbox.mbox(path, create=False)
            raws.update(box.get_bytes(key) for key in box.iterkeys())
            box.close()
        else:
            raws.add(data)
    return raws


def write_mbox(path: pathlib.Path, raws: list[bytes]) -> list[bytes]:
    box = mailbox.mbox(path)
    for raw in raws:
        box.add(raw)
    box.flush()
    stored = [box.get_bytes(key) for key in box.iterkeys()]
    box.close()
    return stored


def test_corpus_directory_gives_one_message_per_distinct_file(account):
    corpus = CORPUS_DIR / "james-mime4j"
    read, new, present, damaged = import_mail("--account", account.email_address, str(corpus))
    expected = expected_raws(corpus)
    stored = [r.content() for r in RawMessage.objects.filter(message__account=account)]
    assert sorted(stored) == sorted(expected)
    assert new == len(expected) and read == new + present
    assert damaged == Message.objects.filter(account=account).exclude(defects=[]).count() > 0
    inbox = Folder.objects.get(account=account, name="INBOX")
    assert inbox.locations.count() == new
    run = SyncRun.objects.get(account=account)
    assert (run.kind, run.status, run.created, run.damaged) == ("import", "succeeded", new, damaged)


def test_importing_twice_changes_nothing(account):
    corpus = str(CORPUS_DIR / "james-mime4j")
    first = import_mail("--account", account.email_address, corpus, "--batch-size", "7")
    before = snapshot(account)
    second = import_mail("--account", account.email_address, corpus, "--batch-size", "7")
    assert second == (first[0], 0, first[0], 0)
    assert snapshot(account) == before


def test_mbox_keeps_bytes_and_maps_gmail_labels_to_folders(account, tmp_path):
    plain = make_mail("plain", message_id="<plain@x>")
    labelled = b"X-Gmail-Labels: Inbox,Important,Opened\n" + make_mail(
        "labelled", message_id="<labelled@x>", minutes=1
    )
    quoted = b'X-Gmail-Labels: "Work, 2026",Unread\n' + make_mail(
        "quoted", message_id="<quoted@x>", body="From here on, a body line.\n", minutes=2
    )
    stored = write_mbox(tmp_path / "takeout.mbox", [plain, labelled, quoted])
    assert import_mail("--account", account.email_address, str(tmp_path)) == (3, 3, 0, 0)

    raws = {m.subject: m.raw.content() for m in Message.objects.filter(account=account)}
    assert sorted(raws.values()) == sorted(stored)

    def folders(subject):
        return sorted(
            Message.objects.get(subject=subject).locations.values_list("folder__name", flat=True)
        )

    assert folders("plain") == ["INBOX"]
    assert folders("labelled") == ["INBOX", "Important"]
    assert folders("quoted") == ["Work, 2026"]
    assert Folder.objects.get(account=account, name="Important").role == Folder.Role.IMPORTANT
    assert not Folder.objects.filter(account=account, name__in=["Opened", "Unread"]).exists()
    read = dict(Message.objects.filter(account=account).values_list("subject", "is_read"))
    assert read == {"plain": False, "labelled": True, "quoted": False}


def test_folder_option_puts_everything_in_that_folder(account, tmp_path):
    labelled = b"X-Gmail-Labels: Inbox,Important\n" + make_mail("labelled")
    write_mbox(tmp_path / "mail.mbox", [labelled, make_mail("other", minutes=1)])
    import_mail("--account", account.email_address, "--folder", "Archive", str(tmp_path))
    names = MessageLocation.objects.filter(message__account=account).values_list(
        "folder__name", flat=True
    )
    assert list(names) == ["Archive", "Archive"]


def test_directory_walk_skips_dotfiles_and_reads_subdirectories(account, tmp_path):
    (tmp_path / "a.eml").write_bytes(make_mail("a"))
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "sub" / "deeper" / "b").write_bytes(make_mail("b", minutes=1))
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x01junk")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "c.eml").write_bytes(make_mail("c", minutes=2))
    assert import_mail("--account", account.email_address, str(tmp_path)) == (2, 2, 0, 0)
    subjects = Message.objects.filter(account=account).values_list("subject", flat=True)
    assert sorted(subjects) == ["a", "b"]


def test_unreadable_file_is_reported_and_skipped(account, tmp_path, monkeypatch):
    (tmp_path / "good.eml").write_bytes(make_mail("good"))
    (tmp_path / "locked.eml").write_bytes(make_mail("locked", minutes=1))
    real_open = pathlib.Path.open

    def guarded_open(self, *args, **kwargs):
        if self.name == "locked.eml":
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "open", guarded_open)
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "import_mail", "--account", account.email_address, str(tmp_path), stdout=out, stderr=err
    )
    assert out.getvalue().startswith("Imported 1 message: 1 new,")
    assert "locked.eml: cannot read" in err.getvalue()
    assert Message.objects.get(account=account).subject == "good"


def test_no_attachments_keeps_metadata_only(account, tmp_path):
    raw = make_mail("doc", attachments=[("a.pdf", "application/pdf", b"%PDF-1.4" * 10)])
    (tmp_path / "doc.eml").write_bytes(raw)
    import_mail("--account", account.email_address, "--no-attachments", str(tmp_path))
    attachment = Attachment.objects.get(message__account=account)
    assert (attachment.filename, attachment.is_stored) == ("a.pdf", False)


def test_missing_path_is_a_command_error(account, tmp_path):
    with pytest.raises(CommandError, match="does not exist"):
        import_mail("--account", account.email_address, str(tmp_path / "nope.mbox"))
    assert not SyncRun.objects.exists()


def test_unknown_account_is_a_command_error(account, tmp_path):
    (tmp_path / "a.eml").write_bytes(make_mail())
    with pytest.raises(CommandError, match="No account nobody@example.com"):
        import_mail("--account", "nobody@example.com", str(tmp_path))


def test_shared_address_needs_an_owner(account, django_user_model, tmp_path):
    bob = django_user_model.objects.create_user("bob", "bob@example.com", "pw-bob-123")
    theirs = Account.objects.create(
        owner=bob, provider=Account.Provider.IMAP, email_address=account.email_address
    )
    (tmp_path / "a.eml").write_bytes(make_mail())
    with pytest.raises(CommandError, match="--owner"):
        import_mail("--account", account.email_address, str(tmp_path))
    import_mail("--account", account.email_address, "--owner", "bob", str(tmp_path))
    assert Message.objects.get().account == theirs


def test_create_for_creates_a_local_account(user, tmp_path):
    (tmp_path / "a.eml").write_bytes(make_mail())
    import_mail("--account", "archive@example.com", "--create-for", user.username, str(tmp_path))
    account = Account.objects.get(email_address="archive@example.com")
    assert (account.owner, account.provider) == (user, Account.Provider.LOCAL)
    assert Message.objects.filter(account=account).count() == 1
    import_mail("--account", "archive@example.com", "--create-for", user.username, str(tmp_path))
    assert Account.objects.filter(email_address="archive@example.com").count() == 1


@pytest.mark.django_db(transaction=True)
def test_import_goes_through_the_message_workers(account, settings, tmp_path):
    """Without --inline the batches travel on email_new_message to a real worker process, and
    the command ends once they are stored."""
    from emailplatform import topics
    from tests.worker import start_worker, stop_worker

    settings.INGEST_DELIVERY = "queue"
    settings.INGEST_INLINE_MAX_MESSAGES = 0  # its batches of 10 would be stored by the command
    corpus = CORPUS_DIR / "james-mime4j"
    worker = start_worker([topics.QUEUE_NEW_MESSAGE], tmp_path / "worker.log", pool="solo")
    try:
        read, new, present, _damaged = import_mail(
            "--account", account.email_address, str(corpus), "--batch-size", "10"
        )
    finally:
        stop_worker(worker)
    assert new == len(expected_raws(corpus)) == Message.objects.filter(account=account).count()
    assert "ingested account=" in (tmp_path / "worker.log").read_text()
    assert read == new + present
