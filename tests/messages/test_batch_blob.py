"""A batch staged as one blob (topics.new_message_items_staged): the queue carries references,
the consumer reads the blob once and stores each message's own bytes."""

from __future__ import annotations

import json

import pytest
from django.core.files.storage import default_storage

from emailplatform import topics
from messages.batch_store import batch_store
from messages.batches import batches_void
from messages.models import DeadLetter, Folder, IngestBatch, Message
from tests.mailfactory import make_mail

pytestmark = pytest.mark.django_db


@pytest.fixture
def inbox(account):
    return Folder.objects.create(account=account, name="INBOX", display_name="INBOX", uidvalidity=3)


def staged_batch(account, folder, raws: list[bytes]) -> tuple[dict, list[dict]]:
    items = topics.new_message_items_staged(
        raws, [{"folder": folder.name, "uid": uid} for uid in range(1, len(raws) + 1)]
    )
    row = IngestBatch.objects.create(
        account=account,
        folder=folder,
        uidvalidity=folder.uidvalidity,
        uids=list(range(1, len(raws) + 1)),
        staged=list(dict.fromkeys(item["rawRef"] for item in items)),
        publisher="test",
        fetched_at="2026-01-01T00:00:00Z",
    )
    return topics.new_message_payload(account.pk, "imap", items, batch_id=row.pk), items


def staged_files() -> list[str]:
    return default_storage.listdir("staged")[1] if default_storage.exists("staged") else []


def test_a_staged_batch_travels_as_references_and_stores_each_message_byte_for_byte(account, inbox):
    raws = [
        make_mail("first", body="one"),
        make_mail("second", attachments=[("a.bin", "application/octet-stream", b"\0\xff" * 900)]),
        make_mail("third", body="three\r\n.\r\n"),
    ]
    payload, items = staged_batch(account, inbox, raws)

    assert len({item["rawRef"] for item in items}) == 1
    assert all("raw" not in item for item in items)
    assert len(json.dumps(payload)) < 1000  # no message bytes on the queue
    assert len(staged_files()) == 1

    assert batch_store(payload)["created"] == 3
    stored = {m.uid: m.message.raw.content() for m in inbox.locations.select_related("message")}
    assert stored == {1: raws[0], 2: raws[1], 3: raws[2]}
    assert staged_files() == []  # deleted once the batch is stored


def test_a_staged_batch_on_the_object_store_is_stored_and_its_blob_removed(
    account, inbox, s3_storage
):
    raws = [make_mail(f"s3-{i}", body="x" * (i * 100)) for i in range(4)]
    payload, _items = staged_batch(account, inbox, raws)
    assert len(s3_storage.objects("staged/")) == 1

    assert batch_store(payload)["created"] == 4
    assert sorted(m.raw.content() for m in Message.objects.all()) == sorted(raws)
    assert s3_storage.objects("staged/") == {}


def test_a_range_past_the_blob_end_is_dead_lettered_with_the_reason(account, inbox):
    payload, items = staged_batch(account, inbox, [make_mail("short")])
    items[0]["rawRange"][1] += 10

    assert "past the end" in batch_store(payload)["reason"]
    assert "past the end" in DeadLetter.objects.get().reason
    assert not Message.objects.exists()


def test_a_range_without_its_blob_reference_breaks_the_contract(account, inbox):
    payload, items = staged_batch(account, inbox, [make_mail("orphan range")])
    del items[0]["rawRef"]

    assert "rawRef" in batch_store(payload)["reason"]
    assert "rawRef" in DeadLetter.objects.get().reason
    assert not Message.objects.exists()


def test_a_missing_blob_is_dead_lettered_while_its_batch_is_still_wanted(account, inbox):
    payload, items = staged_batch(account, inbox, [make_mail("gone-1"), make_mail("gone-2")])
    default_storage.delete(items[0]["rawRef"])

    assert "does not exist" in batch_store(payload)["reason"]
    assert IngestBatch.objects.get().dead_letter_uids == [1, 2]  # not fetched again
    assert not Message.objects.exists()


def test_a_dead_producers_staged_batch_goes_with_its_blob(account, inbox):
    staged_batch(account, inbox, [make_mail("orphaned-1"), make_mail("orphaned-2")])
    assert len(staged_files()) == 1

    assert batches_void(account.pk) == 1
    assert staged_files() == []
