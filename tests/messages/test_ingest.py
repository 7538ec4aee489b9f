"""EmailNewMessage upserts: idempotent, lossless, threaded."""

import hashlib

import pytest

from messages.ingest import messages_upsert
from messages.models import Attachment, Folder, Message, MessageLocation, RawMessage, Thread
from tests.conftest import CORPUS_DIR, corpus_files, incoming
from tests.mailfactory import make_mail

pytestmark = pytest.mark.django_db


def upsert(account, *items):
    return messages_upsert(account=account, items=list(items))


def snapshot(account):
    """Everything a client could see of the account's mail."""
    messages = list(
        Message.objects.filter(account=account)
        .order_by("provider_id")
        .values_list("provider_id", "thread_id", "is_read", "is_flagged", "subject", "updated_at")
    )
    locations = sorted(
        MessageLocation.objects.filter(message__account=account).values_list(
            "message__provider_id", "folder__name", "uid"
        )
    )
    return messages, locations, Thread.objects.filter(account=account).count()


def test_whole_corpus_is_stored_and_raw_bytes_come_back_identical(account):
    files = corpus_files()
    batch = [incoming(f.read_bytes(), folder="INBOX") for f in files]
    result = messages_upsert(account=account, items=batch)
    distinct = {f.read_bytes() for f in files}
    assert result.created == len(distinct) == Message.objects.filter(account=account).count()
    stored = {bytes(r.content()) for r in RawMessage.objects.filter(message__account=account)}
    assert stored == distinct
    damaged = Message.objects.filter(account=account).exclude(defects=[])
    assert damaged.count() == result.damaged > 0
    badbound = (CORPUS_DIR / "james-mime4j/badbound.msg").read_bytes()
    message = Message.objects.get(account=account, raw__sha256=hashlib.sha256(badbound).hexdigest())
    assert "StartBoundaryNotFoundDefect" in message.defects


def test_corpus_sample_fields_are_right(account):
    files = {f.name: f for f in corpus_files()}
    upsert(account, incoming(files["simple-attachment.msg"].read_bytes(), folder="INBOX"))
    message = Message.objects.get(account=account)
    assert message.subject == "Here is the attachment I was waiting for."
    assert message.from_address == "bar@example.com"
    assert message.date.isoformat() == "2007-04-27T14:08:23+00:00"
    assert message.has_attachments
    attachment = message.attachments.get()
    assert (attachment.filename, attachment.size) == ("data.bin", 1024)
    with attachment.file.open("rb") as handle:
        assert len(handle.read()) == 1024


def test_same_batch_twice_leaves_the_store_unchanged(account):
    batch = [
        incoming(make_mail(f"m{i}", message_id=f"<m{i}@x>"), folder="INBOX", uid=i + 1)
        for i in range(5)
    ]
    first = messages_upsert(account=account, items=batch)
    before = snapshot(account)
    second = messages_upsert(account=account, items=batch)
    assert (first.created, second.created, second.updated, second.unchanged) == (5, 0, 0, 5)
    assert snapshot(account) == before


def test_overlapping_batches_give_one_row_per_message(account):
    mails = [make_mail(f"m{i}", message_id=f"<m{i}@x>") for i in range(6)]
    upsert(account, *[incoming(m, folder="INBOX") for m in mails[:4]])
    result = upsert(account, *[incoming(m, folder="INBOX") for m in mails[2:]])
    assert (result.created, result.unchanged) == (2, 2)
    assert Message.objects.filter(account=account).count() == 6
    assert MessageLocation.objects.filter(message__account=account).count() == 6


def test_message_seen_in_a_second_folder_gains_a_location(account):
    raw = make_mail("moved", message_id="<moved@x>")
    upsert(account, incoming(raw, folder="INBOX", uid=7))
    result = upsert(account, incoming(raw, folder="Archive", uid=3))
    message = Message.objects.get(account=account)
    assert result.updated == 1
    assert sorted(message.locations.values_list("folder__name", "uid")) == [
        ("Archive", 3),
        ("INBOX", 7),
    ]
    assert Folder.objects.get(account=account, name="Archive").role == Folder.Role.ARCHIVE


def test_provider_flags_are_applied_on_redelivery(account):
    raw = make_mail("flags", message_id="<flags@x>")
    upsert(account, incoming(raw, folder="INBOX", uid=1, flags=[]))
    assert not Message.objects.get(account=account).is_read
    result = upsert(account, incoming(raw, folder="INBOX", uid=1, flags=["\\Seen", "\\Flagged"]))
    message = Message.objects.get(account=account)
    assert (result.updated, message.is_read, message.is_flagged) == (1, True, True)


def test_uid_reused_by_another_message_moves_to_it(account):
    upsert(account, incoming(make_mail("old", message_id="<old@x>"), folder="INBOX", uid=1))
    upsert(account, incoming(make_mail("new", message_id="<new@x>"), folder="INBOX", uid=1))
    holders = MessageLocation.objects.filter(folder__name="INBOX", uid=1)
    assert list(holders.values_list("message__subject", flat=True)) == ["new"]


def test_replies_share_a_thread_and_a_late_parent_merges_two_threads(account):
    root = make_mail("Plan", message_id="<root@x>", minutes=0)
    middle = make_mail(
        "Re: Plan",
        message_id="<mid@x>",
        in_reply_to="<root@x>",
        references=["<root@x>"],
        minutes=1,
    )
    reply_a = make_mail(
        "Re: Plan",
        message_id="<a@x>",
        in_reply_to="<mid@x>",
        references=["<root@x>", "<mid@x>"],
        minutes=2,
    )
    reply_b = make_mail("Re: Plan", message_id="<b@x>", in_reply_to="<mid@x>", minutes=3)
    upsert(account, incoming(root))
    upsert(account, incoming(reply_b))
    assert Thread.objects.filter(account=account).count() == 2, "b's parent is not known yet"
    upsert(account, incoming(middle))
    assert Thread.objects.filter(account=account).count() == 1, "the late parent joins them"
    upsert(account, incoming(reply_a))
    thread = Thread.objects.get(account=account)
    assert thread.message_count == 4
    assert thread.subject == "Plan"
    order = thread.messages.order_by("sort_date").values_list("message_id_header", flat=True)
    assert list(order) == ["<root@x>", "<mid@x>", "<a@x>", "<b@x>"]


def test_unrelated_messages_get_their_own_threads(account):
    upsert(account, *[incoming(make_mail(f"s{i}", message_id=f"<s{i}@x>")) for i in range(3)])
    assert Thread.objects.filter(account=account).count() == 3


def test_provider_thread_ids_win(account):
    a = incoming(make_mail("one", message_id="<1@x>"), provider_id="g1", provider_thread_id="t1")
    b = incoming(make_mail("two", message_id="<2@x>"), provider_id="g2", provider_thread_id="t1")
    upsert(account, a, b)
    thread = Thread.objects.get(account=account)
    assert (thread.provider_thread_id, thread.message_count) == ("t1", 2)


def test_without_attachments_only_metadata_is_kept(account):
    raw = make_mail("doc", attachments=[("report.pdf", "application/pdf", b"%PDF-1.4 x" * 50)])
    upsert(account, incoming(raw, include_attachments=False))
    attachment = Attachment.objects.get(message__account=account)
    assert (attachment.filename, attachment.size, attachment.is_stored) == (
        "report.pdf",
        500,
        False,
    )


def test_deleting_an_account_removes_its_mail(account):
    upsert(
        account,
        incoming(make_mail("a", message_id="<a@x>"), folder="INBOX", uid=1),
        incoming(
            make_mail("Re: a", message_id="<b@x>", in_reply_to="<a@x>"), folder="INBOX", uid=2
        ),
    )
    account.delete()
    assert Message.objects.count() == Thread.objects.count() == RawMessage.objects.count() == 0
    assert MessageLocation.objects.count() == 0


def test_changes_are_recorded_as_events_once(account):
    from messages.models import ChangeEvent

    def events():
        return sorted(ChangeEvent.objects.values_list("object_type", "kind").distinct())

    raw = make_mail("evented", message_id="<ev@x>")
    upsert(account, incoming(raw, folder="INBOX", uid=1))
    assert events() == [("folder", "created"), ("message", "created"), ("thread", "created")]
    count = ChangeEvent.objects.count()
    upsert(account, incoming(raw, folder="INBOX", uid=1))
    assert ChangeEvent.objects.count() == count, "a redelivered batch changes nothing"
    upsert(account, incoming(raw, folder="INBOX", uid=1, flags=["\\Seen"]))
    new = ChangeEvent.objects.filter(id__gt=0).order_by("id")[count:]
    # The thread's unread count changed with its message: both are reported.
    assert [(e.object_type, e.kind) for e in new] == [("message", "updated"), ("thread", "updated")]
    assert {e.owner_id for e in new} == {account.owner_id}


@pytest.fixture
def big_message(tmp_path, settings):
    """A 3 MB mail above a lowered LARGE_MESSAGE_BYTES, as the IMAP sync hands it over."""
    settings.LARGE_MESSAGE_BYTES = 1024 * 1024
    payload = bytes(range(256)) * 12 * 1024
    raw = make_mail(
        "Scan",
        message_id="<scan@example.org>",
        attachments=[("scan.tiff", "image/tiff", payload)],
    )
    path = tmp_path / "incoming.eml"
    path.write_bytes(raw)
    return raw, payload, path


def test_a_big_message_is_stored_from_its_file_with_its_raw_in_storage(
    account, big_message, django_capture_on_commit_callbacks
):
    import os

    from django.core.files.storage import default_storage

    from emailplatform.topics import IncomingMessage
    from messages.services import account_delete

    raw, payload, path = big_message
    result = upsert(account, IncomingMessage(raw=b"", raw_file=str(path), folders=["INBOX"]))
    assert result.created == 1
    message = Message.objects.get(account=account)
    assert (message.subject, message.size, message.body_text) == (
        "Scan",
        len(raw),
        "Hello Alice,\nhow are you?\n",
    )
    stored_raw = message.raw
    assert stored_raw.file and bytes(stored_raw.data) == b""
    assert stored_raw.content() == raw and stored_raw.sha256 == hashlib.sha256(raw).hexdigest()
    assert stored_raw.head().startswith(b"From: ") and len(stored_raw.head()) < 1000
    [attachment] = message.attachments.all()
    assert (attachment.filename, attachment.size) == ("scan.tiff", len(payload))
    assert attachment.file.read() == payload
    # Idempotent: the same message again adds nothing, not even a second raw file.
    assert (
        upsert(account, IncomingMessage(raw=b"", raw_file=str(path), folders=["INBOX"])).created
        == 0
    )
    raw_dir = default_storage.path(f"raw/{account.pk}")
    assert sum(len(files) for _, _, files in os.walk(raw_dir)) == 1

    account.status = account.Status.DELETING
    account.save()
    with django_capture_on_commit_callbacks(execute=True):
        assert account_delete(account_id=account.pk)
    assert not default_storage.exists(stored_raw.file.name)
    assert not default_storage.exists(attachment.file.name)


def test_a_big_message_left_without_attachments_gives_them_on_demand(account, big_message):
    from emailplatform.topics import IncomingMessage
    from messages.services import attachment_ensure_stored

    raw, payload, path = big_message
    item = IncomingMessage(raw=b"", raw_file=str(path), include_attachments=False)
    upsert(account, item)
    attachment = Attachment.objects.get(message__account=account)
    assert not attachment.file and attachment.size == len(payload)
    attachment = attachment_ensure_stored(attachment=attachment)
    assert attachment.file.read() == payload
    assert attachment.sha256 == hashlib.sha256(payload).hexdigest()


def test_a_small_batch_keeps_its_raw_bytes_in_the_rows(account):
    import os

    from django.core.files.storage import default_storage

    raws = [make_mail(f"Small {i}", message_id=f"<small-{i}@example.org>") for i in range(2)]
    upsert(account, *[incoming(raw, folder="INBOX", uid=i + 1) for i, raw in enumerate(raws)])
    stored = list(RawMessage.objects.filter(message__account=account).order_by("message_id"))
    assert [r.file.name for r in stored] == ["", ""]
    assert [r.content() for r in stored] == raws
    raw_dir = default_storage.path(f"raw/{account.pk}")
    assert not os.path.exists(raw_dir) or not any(files for _, _, files in os.walk(raw_dir))


def test_a_batch_shares_one_raw_segment_removed_with_its_last_message(
    account, django_capture_on_commit_callbacks, settings
):
    from django.core.files.storage import default_storage

    from messages.mailbox import orphans_delete

    settings.RAW_IN_ROW_MAX_BYTES = 0

    raws = [make_mail(f"Segment {i}", message_id=f"<seg-{i}@example.org>") for i in range(3)]
    upsert(account, *[incoming(raw, folder="INBOX", uid=i + 1) for i, raw in enumerate(raws)])
    stored = list(RawMessage.objects.filter(message__account=account).order_by("offset"))
    assert len({r.file.name for r in stored}) == 1, "one file for the batch"
    assert [r.content() for r in stored] == raws
    segment = stored[0].file.name

    def drop(subject):
        MessageLocation.objects.filter(message__subject=subject).delete()
        with django_capture_on_commit_callbacks(execute=True):
            orphans_delete(account)

    drop("Segment 0")
    assert default_storage.exists(segment), "still holds two messages"
    left = RawMessage.objects.filter(message__account=account)
    assert sorted(r.content() for r in left) == sorted(raws[1:])
    drop("Segment 1")
    drop("Segment 2")
    assert not default_storage.exists(segment)


def test_a_batch_that_fails_leaves_no_raw_file_behind(account, monkeypatch, settings):
    import os

    settings.RAW_IN_ROW_MAX_BYTES = 0  # a segment file is written before the crash

    from django.core.files.storage import default_storage

    from messages import ingest

    def crash(*args, **kwargs):
        raise RuntimeError("worker died mid-batch")

    monkeypatch.setattr(ingest, "assign_threads", crash)
    with pytest.raises(RuntimeError):
        messages_upsert(
            account=account,
            items=[incoming(make_mail("Lost?"), folder="INBOX", uid=1)],
            isolate=False,
        )
    assert Message.objects.filter(account=account).count() == 0
    raw_dir = default_storage.path(f"raw/{account.pk}")
    assert not os.path.exists(raw_dir) or not any(files for _, _, files in os.walk(raw_dir))
