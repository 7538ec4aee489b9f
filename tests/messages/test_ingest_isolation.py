"""One message never stops a batch: each stage that can fail for one message is made to fail
(fault injection into our own functions), and the rest of the batch is stored."""

from __future__ import annotations

import base64
import io
import os

import pytest
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.db import OperationalError

from messages import ingest, mime
from messages.ingest import messages_upsert
from messages.models import Account, Attachment, DeadLetter, Message, RawMessage, SyncRun, Thread
from messages.services import attachment_ensure_stored
from messages.tasks import ingest_new_messages
from tests.conftest import incoming
from tests.mailfactory import make_mail
from tests.messages.test_consumer import good_payload
from tests.messages.test_mime_robustness import RFC2231_CHARSET

pytestmark = pytest.mark.django_db

BAD_ID = "<bad@example.org>"


def batch_with_one_bad(count: int = 6, **bad_kwargs) -> list[bytes]:
    raws = [
        make_mail(f"Good {i}", message_id=f"<good-{i}@example.org>", minutes=i)
        for i in range(count - 1)
    ]
    raws.insert(count // 2, make_mail("Bad one", message_id=BAD_ID, **bad_kwargs))
    return raws


def upsert(account, raws):
    items = [incoming(raw, folder="INBOX", uid=i + 1) for i, raw in enumerate(raws)]
    return messages_upsert(account=account, items=items)


def fail_for(monkeypatch, module, name, should_fail, exc=None):
    real = getattr(module, name)

    def wrapper(*args, **kwargs):
        if should_fail(*args, **kwargs):
            raise exc or RuntimeError("injected failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)


def threading_fails_for_bad(monkeypatch, exc=None):
    fail_for(
        monkeypatch,
        ingest,
        "assign_threads",
        lambda account, inputs: any(i.own_id == BAD_ID for i in inputs),
        exc or RuntimeError("threader bug"),
    )


def rows_fail_for_bad(monkeypatch):
    fail_for(
        monkeypatch, ingest, "_message_row", lambda account, p, *a: p.parsed.message_id == BAD_ID
    )


@pytest.fixture(autouse=True)
def _segment_files(settings):
    """Raw bytes go to segment files (not rows) here, so that the files a failed write leaves
    are there to be checked."""
    settings.RAW_IN_ROW_MAX_BYTES = 0


def raw_files_are_all_referenced(account):
    root = default_storage.path(f"raw/{account.pk}")
    on_disk = {
        os.path.relpath(os.path.join(d, f), default_storage.path(""))
        for d, _, files in os.walk(root)
        for f in files
    }
    referenced = set(
        RawMessage.objects.filter(message__account=account)
        .exclude(file="")
        .values_list("file", flat=True)
    )
    return on_disk == referenced


def test_threading_failure_isolates_the_message_and_stores_it_damaged(account, monkeypatch):
    threading_fails_for_bad(monkeypatch)
    raws = batch_with_one_bad()
    result = upsert(account, raws)
    assert (result.created, result.damaged, result.dead_letters) == (6, 1, [])
    bad = Message.objects.get(account=account, message_id_header=BAD_ID)
    assert bad.subject == "Bad one" and bad.body_text == "Hello Alice,\nhow are you?\n"
    assert bad.defects == [
        "could not be stored in full (RuntimeError: threader bug); "
        "stored without threading or attachments"
    ]
    assert bytes(bad.raw.content()) == raws[3]
    assert bad.thread.message_count == 1 and bad.thread.subject == "Bad one"
    assert list(bad.locations.values_list("folder__name", "uid")) == [("INBOX", 4)]
    good = Message.objects.filter(account=account).exclude(pk=bad.pk)
    assert all(m.defects == [] for m in good) and good.count() == 5
    account.refresh_from_db()
    assert account.last_error == "1 message stored as damaged: RuntimeError: threader bug"
    assert raw_files_are_all_referenced(account)


def test_attachment_storage_failure_keeps_the_message_and_its_attachment_on_demand(
    account, monkeypatch
):
    fail_for(
        monkeypatch,
        ingest,
        "attachment_file_store",
        lambda attachment: attachment.filename == "bad.bin",
        ValueError("storage rejected the name"),
    )
    raws = [
        make_mail(
            "ok", message_id="<ok@x>", attachments=[("ok.bin", "application/x-a", b"A" * 99)]
        ),
        make_mail(
            "bad", message_id=BAD_ID, attachments=[("bad.bin", "application/x-b", b"B" * 77)]
        ),
    ]
    result = upsert(account, raws)
    assert (result.created, result.damaged) == (2, 1)
    bad = Message.objects.get(message_id_header=BAD_ID)
    assert bad.defects == [
        "attachment files could not be stored (ValueError: storage rejected the name); "
        "kept in the raw message only"
    ]
    attachment = bad.attachments.get()
    assert not attachment.is_stored
    assert attachment_ensure_stored(attachment=attachment).file.read() == b"B" * 77
    assert Attachment.objects.get(filename="ok.bin").is_stored
    account.refresh_from_db()
    assert "attachment files could not be stored (ValueError" in account.last_error


def test_conversion_failure_stores_a_minimal_parse_with_the_raw_kept(account, monkeypatch):
    real = mime._read_parts

    def read_parts(msg, result):
        if result.message_id == BAD_ID:
            raise KeyError("converter bug")
        real(msg, result)

    monkeypatch.setattr(mime, "_read_parts", read_parts)
    raws = batch_with_one_bad(4)
    result = upsert(account, raws)
    assert (result.created, result.damaged) == (4, 1)
    bad = Message.objects.get(message_id_header=BAD_ID)
    assert bad.defects == ["conversion failed: KeyError: 'converter bug'"]
    assert bad.subject == "Bad one" and "how are you?" in bad.body_text
    assert bytes(bad.raw.content()) == raws[2]
    account.refresh_from_db()
    assert account.last_error == (
        "1 message stored as damaged: conversion failed: KeyError: 'converter bug'"
    )


def test_a_message_that_cannot_be_stored_at_all_is_dead_lettered(account, monkeypatch):
    rows_fail_for_bad(monkeypatch)
    raws = batch_with_one_bad()
    result = upsert(account, raws)
    assert result.created == 5
    letter = DeadLetter.objects.get()
    assert [(d.letter_id, d.item.uid) for d in result.dead_letters] == [(letter.pk, 4)]
    assert letter.reason == "message could not be stored: RuntimeError: injected failure"
    assert letter.account_id == account.pk
    assert (letter.payload["folders"], letter.payload["uid"]) == (["INBOX"], 4)
    assert base64.b64decode(letter.payload["raw"]) == raws[3]
    assert not Message.objects.filter(message_id_header=BAD_ID).exists()
    account.refresh_from_db()
    assert account.last_error == (
        f"1 message could not be stored: RuntimeError: injected failure (dead letter #{letter.pk})"
    )
    assert raw_files_are_all_referenced(account)


def test_infrastructure_errors_are_not_split_but_raised(account, monkeypatch):
    threading_fails_for_bad(monkeypatch, OperationalError("server closed the connection"))
    with pytest.raises(OperationalError):
        upsert(account, batch_with_one_bad())
    assert Message.objects.count() == DeadLetter.objects.count() == Thread.objects.count() == 0
    assert Account.objects.get(pk=account.pk).last_error == ""


def test_the_rfc2231_charset_message_is_ingested_with_its_batch(account):
    result = upsert(account, [make_mail("before"), RFC2231_CHARSET, make_mail("after", minutes=1)])
    assert (result.created, result.damaged) == (3, 0)
    assert Message.objects.get(subject="charset star").body_text == "Café at noon.\n"


def test_consumer_stores_the_batch_and_dead_letters_the_bad_message(account, monkeypatch):
    rows_fail_for_bad(monkeypatch)
    outcome = ingest_new_messages.apply(
        args=[good_payload(account.pk, *batch_with_one_bad())]
    ).get()
    letter = DeadLetter.objects.get()
    assert outcome == {
        "created": 5,
        "updated": 0,
        "unchanged": 0,
        "damaged": 0,
        "deadLetters": [letter.pk],
    }
    assert Message.objects.filter(account=account).count() == 5


def test_consumer_stores_a_message_whose_threading_fails_as_damaged(account, monkeypatch):
    threading_fails_for_bad(monkeypatch)
    outcome = ingest_new_messages.apply(
        args=[good_payload(account.pk, *batch_with_one_bad())]
    ).get()
    assert (outcome["created"], outcome["damaged"], outcome["deadLetters"]) == (6, 1, [])


def run_import(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command("import_mail", *args, stdout=out, stderr=err)
    return out.getvalue().strip(), err.getvalue()


def test_import_mail_imports_the_rfc2231_charset_message_with_the_rest(account, tmp_path):
    for i, raw in enumerate([make_mail("one"), RFC2231_CHARSET, make_mail("two", minutes=2)]):
        (tmp_path / f"{i}.eml").write_bytes(raw)
    out, _ = run_import("--account", account.email_address, str(tmp_path))
    assert (
        out == "Imported 3 messages: 3 new, 0 already present, 0 damaged (parse defects recorded)."
    )
    assert Message.objects.get(subject="charset star").body_text == "Café at noon.\n"


def test_import_mail_goes_on_past_a_message_it_cannot_store(account, tmp_path, monkeypatch):
    rows_fail_for_bad(monkeypatch)
    for i, raw in enumerate(batch_with_one_bad(5)):
        (tmp_path / f"{i}.eml").write_bytes(raw)
    out, err = run_import("--account", account.email_address, "--batch-size", "3", str(tmp_path))
    letter = DeadLetter.objects.get()
    assert out == (
        "Imported 5 messages: 4 new, 0 already present, 0 damaged (parse defects recorded), "
        "1 not stored (dead letters)."
    )
    assert f"(dead letter #{letter.pk})" in err
    run = SyncRun.objects.get(account=account)
    assert (run.status, run.created) == ("succeeded", 4)
    account.refresh_from_db()
    assert f"dead letter #{letter.pk}" in account.last_error
