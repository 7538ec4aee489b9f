"""The EmailNewMessage consumer: bad payloads are dead-lettered, good ones flow end to end."""

import base64

import pytest
from django.db import connection

from emailplatform import topics
from messages.models import DeadLetter, Message
from messages.tasks import ingest_new_messages
from tests.mailfactory import make_mail
from tests.worker import start_worker, stop_worker, wait_for


def good_payload(account_id, *raws, folder="INBOX"):
    items = [
        topics.new_message_item(raw, folder=folder, uid=i + 1, flags=["\\Seen"])
        for i, raw in enumerate(raws)
    ]
    return topics.new_message_payload(account_id, "local", items)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda p: p.pop("accountId"), "'accountId' is a required property"),
        (lambda p: p.update(accountId="seven"), "accountId: 'seven' is not of type 'integer'"),
        (lambda p: p["messages"][0].update(raw="***not base64***"), "not valid base64"),
        (lambda p: p["messages"][0].pop("raw"), "messages/0"),
        (lambda p: p["messages"][0].update(uid=-4), "messages/0/uid"),
        (lambda p: p.update(schema=99), "schema"),
        (lambda p: p["messages"][0].update(serverId=""), "messages/0/serverId"),
        (lambda p: p["messages"][0].update(serverID="guid:x"), "serverID"),
        (lambda p: p.update(accountId=999999), "account 999999 does not exist"),
    ],
)
def test_malformed_payload_is_dead_lettered_with_its_reason(account, mangle, reason):
    payload = good_payload(account.pk, make_mail("x"))
    mangle(payload)
    outcome = ingest_new_messages.apply(args=[payload]).get()
    letter = DeadLetter.objects.get()
    assert outcome["deadLetter"] == letter.pk
    assert reason in letter.reason
    assert letter.payload == payload
    assert Message.objects.count() == 0


@pytest.mark.django_db
def test_the_server_id_travels_to_the_stored_message(account):
    item = topics.new_message_item(make_mail("x"), folder="INBOX", uid=7, server_id="guid:abc")
    ingest_new_messages.apply(args=[topics.new_message_payload(account.pk, "imap", [item])]).get()
    assert Message.objects.get().server_ids == ["guid:abc"]


@pytest.mark.django_db
def test_payload_that_is_not_an_object_is_dead_lettered():
    ingest_new_messages.apply(args=["just a string"]).get()
    assert "is not of type 'object'" in DeadLetter.objects.get().reason


@pytest.mark.django_db
def test_big_message_travels_by_reference_and_the_blob_is_removed(
    account, settings, django_capture_on_commit_callbacks
):
    settings.INLINE_RAW_LIMIT_BYTES = 1000
    raw = make_mail("big", attachments=[("blob.bin", "application/octet-stream", b"z" * 5000)])
    payload = good_payload(account.pk, raw)
    ref = payload["messages"][0]["rawRef"]
    assert "raw" not in payload["messages"][0]
    with django_capture_on_commit_callbacks(execute=True):
        ingest_new_messages.apply(args=[payload]).get()
    message = Message.objects.get(account=account)
    assert bytes(message.raw.content()) == raw
    from django.core.files.storage import default_storage

    assert not default_storage.exists(ref)


@pytest.mark.django_db(transaction=True)
def test_worker_consumes_published_batches_end_to_end(account, tmp_path):
    """publish -> Redis -> real worker process -> rows; a bad payload does not block the queue."""
    proc = start_worker([topics.QUEUE_NEW_MESSAGE], tmp_path / "worker.log")
    try:
        bad = {"schema": 1, "accountId": account.pk, "provider": "local", "messages": [{}]}
        topics.publish_new_messages(bad)
        raws = [make_mail(f"queued {i}", message_id=f"<q{i}@x>") for i in range(3)]
        topics.publish_new_messages(good_payload(account.pk, *raws))
        topics.publish_new_messages(good_payload(account.pk, *raws))  # redelivery
        wait_for(lambda: Message.objects.filter(account=account).count() == 3, what="3 rows")
        wait_for(lambda: DeadLetter.objects.count() == 1, what="the dead letter")
        # Let the duplicate batch run too, then check it changed nothing.
        topics.publish_new_messages(good_payload(account.pk, make_mail("last", message_id="<z@x>")))
        wait_for(lambda: Message.objects.filter(account=account).count() == 4, what="4 rows")
        assert sorted(Message.objects.values_list("subject", flat=True)) == [
            "last",
            "queued 0",
            "queued 1",
            "queued 2",
        ]
        assert all(Message.objects.values_list("is_read", flat=True))
        assert proc.poll() is None, "the worker must survive a malformed payload"
    finally:
        stop_worker(proc)
        connection.close()


def test_payload_raw_is_base64_of_the_exact_bytes():
    raw = b"Subject: x\r\n\r\n\xff\xfe binary \x00 body"
    item = topics.new_message_item(raw, folder="INBOX")
    assert base64.b64decode(item["raw"]) == raw
    batch = topics.parse_new_message_payload(topics.new_message_payload(1, "imap", [item]))
    assert batch.messages[0].raw == raw
    assert batch.messages[0].folders == ["INBOX"]
