"""The media storage on S3 (MEDIA_STORAGE=s3): ingest, downloads, the sweeper, multipart
uploads and the durability rule, against a local S3 server.

The S3 endpoint is moto's standalone server (`python -m moto.server`: moto's in-memory
implementation of the S3 REST API behind a real HTTP server on a free 127.0.0.1 port, started
once per test session by `tests/s3_fixtures.py`); each test has a bucket of its own, looked at
through a boto3 client of the test's own.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import OperationalError, connection
from django.urls import reverse
from django.utils import timezone

from emailplatform import topics
from emailplatform.object_storage import OBJECT_STORE_ERRORS
from emailplatform.tempdirs import process_temp_dir
from messages.ingest import messages_upsert
from messages.models import Attachment, DeadLetter, IngestBatch, Message, RawMessage
from messages.storage_sweep import storage_sweep
from messages.tasks import ingest_new_messages
from tests.conftest import incoming, token_client
from tests.mailfactory import make_mail
from tests.s3_fixtures import ACCESS_KEY, REGION, SECRET_KEY, storage_options

pytestmark = pytest.mark.django_db
HOUR = 3600
MIB = 2**20


def three_mails() -> list[bytes]:
    return [
        make_mail(
            f"Report {n}",
            message_id=f"<report-{n}@example.org>",
            body=f"Quarter {n}\n" * 50,
            attachments=[(f"q{n}.pdf", "application/pdf", f"%PDF-1.4 q{n} ".encode() * 400)],
        )
        for n in range(3)
    ]


def local_media_files(settings) -> list[str]:
    root = Path(settings.MEDIA_ROOT)
    return [str(p) for p in root.rglob("*") if p.is_file()] if root.exists() else []


def get_object_calls(storage) -> list[dict]:
    """Each GetObject the platform's storage makes from now on: its range and body size."""
    calls: list[dict] = []

    def seen(parsed, **kwargs):
        calls.append({"range": parsed.get("ContentRange"), "length": parsed["ContentLength"]})

    storage.client.meta.events.register("after-call.s3.GetObject", seen)
    return calls


def test_ingest_writes_segments_and_attachments_to_the_bucket_and_reads_one_message_by_range(
    account, settings, s3_storage
):
    settings.RAW_IN_ROW_MAX_BYTES = 0  # one segment file for the batch
    raws = three_mails()
    result = messages_upsert(account=account, items=[incoming(raw, "INBOX") for raw in raws])
    assert result.created == 3

    rows = list(RawMessage.objects.order_by("offset"))
    [segment] = {row.file.name for row in rows}
    objects = s3_storage.objects()
    assert objects[segment] == sum(row.length for row in rows)
    attachments = Attachment.objects.all()
    assert {a.file.name for a in attachments} <= objects.keys()
    for a in attachments:
        assert s3_storage.get(a.file.name) == f"%PDF-1.4 {a.filename[:2]} ".encode() * 400
    assert local_media_files(settings) == [], "nothing on this host's disk"

    calls = get_object_calls(default_storage)
    middle = rows[1]
    assert middle.content() == raws[1]
    [call] = calls
    assert call["length"] == middle.length < objects[segment]
    assert call["range"].startswith(f"bytes {middle.offset}-{middle.offset + middle.length - 1}/")


def test_raw_and_attachment_downloads_through_the_api_stream_from_the_bucket(
    account, user, settings, s3_storage, client, django_user_model
):
    settings.RAW_IN_ROW_MAX_BYTES = 0
    raws = three_mails()
    messages_upsert(account=account, items=[incoming(raw, "INBOX") for raw in raws])
    api = token_client(user)
    message = Message.objects.get(message_id_header="<report-2@example.org>")

    response = api.get(f"/api/messages/{message.pk}/raw/")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == raws[2]

    attachment = message.attachments.get()
    response = api.get(f"/api/attachments/{attachment.pk}/download/")
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    assert body == b"%PDF-1.4 q2 " * 400
    assert response["Content-Length"] == str(len(body))
    assert 'filename="q2.pdf"' in response["Content-Disposition"]

    # The admin's views of the same.
    root = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-1")
    client.force_login(root)
    served = client.get(
        reverse("admin:mailstore_message_attachment", args=[message.pk, attachment.pk])
    )
    assert b"".join(served.streaming_content) == body
    served = client.get(reverse("admin:mailstore_message_raw", args=[message.pk]))
    assert b"".join(served.streaming_content) == raws[2]

    # An attachment whose object is lost is extracted from the raw message into the bucket.
    s3_storage.client.delete_object(Bucket=s3_storage.name, Key=attachment.file.name)
    response = api.get(f"/api/attachments/{attachment.pk}/download/")
    assert b"".join(response.streaming_content) == body
    assert s3_storage.get(attachment.file.name) == body


def test_the_sweeper_removes_objects_no_row_names_once_past_the_grace_period(
    account, settings, s3_storage
):
    settings.STORAGE_SWEEP_GRACE_SECONDS = HOUR
    settings.RAW_IN_ROW_MAX_BYTES = 0
    messages_upsert(account=account, items=[incoming(raw, "INBOX") for raw in three_mails()])
    named = set(s3_storage.objects())
    orphans = {
        default_storage.save(name, ContentFile(b"left by a killed worker"))
        for name in (
            f"raw/{account.pk}/202612/crashed-batch.zs",
            "attachments/ab/ab" + "0" * 62,
            "outbound/lost-upload.bin",
            "staged/of-a-lost-batch.eml",
        )
    }
    in_flight = default_storage.save("staged/on-the-queue.eml", ContentFile(b"big mail"))
    IngestBatch.objects.create(
        account=account, staged=[in_flight], publisher="test", fetched_at=timezone.now()
    )

    # An object's age is the store's LastModified (it cannot be backdated): sweep "later".
    young = storage_sweep()
    assert young["raw"] == young["attachments"] == young["outbound"] == young["staged"] == 0
    assert set(s3_storage.objects()) == named | orphans | {in_flight}

    # A worker killed mid multipart upload leaves its parts, which no object listing shows.
    # (moto reports every upload as initiated in 2010, so only the abort is checked here.)
    client = s3_storage.client
    killed = client.create_multipart_upload(Bucket=s3_storage.name, Key=f"raw/{account.pk}/k.zst")
    client.upload_part(
        Bucket=s3_storage.name,
        Key=f"raw/{account.pk}/k.zst",
        UploadId=killed["UploadId"],
        PartNumber=1,
        Body=b"p" * 5 * MIB,
    )

    later = storage_sweep(now=timezone.now() + timedelta(hours=2))
    assert (later["raw"], later["attachments"], later["outbound"], later["staged"]) == (1, 1, 1, 1)
    assert later["uploads"] == 1, "a dead process's incomplete multipart upload is aborted"
    assert client.list_multipart_uploads(Bucket=s3_storage.name).get("Uploads", []) == []
    assert set(s3_storage.objects()) == named | {in_flight}
    for row in RawMessage.objects.all():
        assert row.content().startswith(b"From: ")


def test_a_big_message_goes_up_in_parts_and_travels_the_queue_by_reference(
    account, user, settings, s3_bucket
):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": storage_options(
            s3_bucket.server,
            s3_bucket.name,
            multipart_threshold=5 * MIB,
            multipart_chunksize=5 * MIB,  # S3's smallest part
        ),
    }
    settings.LARGE_MESSAGE_BYTES = 1 * MIB
    scan = os.urandom(9 * MIB)  # incompressible: the stored objects stay big
    raw = make_mail("Scan", attachments=[("scan.bin", "application/octet-stream", scan)])
    assert len(raw) > 12 * MIB

    payload = topics.new_message_payload(
        account.pk, "local", [topics.new_message_item(raw, folder="INBOX", uid=1)]
    )
    ref = payload["messages"][0]["rawRef"]
    assert s3_bucket.head(ref)["ETag"].endswith('-3"'), "staged in 3 parts"
    outcome = ingest_new_messages.apply(args=[payload]).get()
    assert outcome["created"] == 1

    message = Message.objects.get()
    stored = message.raw
    assert stored.file.name.endswith(".zst") and stored.length is None
    segment = s3_bucket.head(stored.file.name)
    assert segment["ContentLength"] > 8 * MIB and segment["ETag"].endswith('-2"')
    attachment = message.attachments.get()
    assert s3_bucket.head(attachment.file.name)["ETag"].endswith('-2"')
    assert ref not in s3_bucket.objects(), "the staged object is removed once stored"
    assert not list(Path(process_temp_dir()).glob("staged-*")), "its local copy too"

    api = token_client(user)
    response = api.get(f"/api/messages/{message.pk}/raw/")
    body = b"".join(response.streaming_content)
    assert hashlib.sha256(body).digest() == hashlib.sha256(raw).digest()
    response = api.get(f"/api/attachments/{attachment.pk}/download/")
    assert b"".join(response.streaming_content) == scan


def test_a_segment_is_in_the_bucket_whole_before_the_rows_naming_it_are_written(
    account, settings, s3_storage
):
    settings.RAW_IN_ROW_MAX_BYTES = 0
    seen_at_insert: list[dict[str, int]] = []

    def look_at_the_bucket(execute, sql, params, many, context):
        if sql.lstrip().upper().startswith('INSERT INTO "MAILSTORE_RAWMESSAGE"'):
            seen_at_insert.append(s3_storage.objects("raw/"))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(look_at_the_bucket):
        messages_upsert(account=account, items=[incoming(raw, "INBOX") for raw in three_mails()])

    [objects] = seen_at_insert
    rows = RawMessage.objects.all()
    [segment] = {row.file.name for row in rows}
    assert objects == {segment: sum(row.length for row in rows)}


def test_a_batch_rolled_back_after_its_upload_removes_its_segment(account, settings, s3_storage):
    settings.RAW_IN_ROW_MAX_BYTES = 0

    def database_lost(execute, sql, params, many, context):
        if sql.lstrip().upper().startswith('INSERT INTO "MAILSTORE_RAWMESSAGE"'):
            raise OperationalError("server closed the connection unexpectedly")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(database_lost), pytest.raises(OperationalError):
        messages_upsert(account=account, items=[incoming(raw, "INBOX") for raw in three_mails()])
    assert Message.objects.count() == 0
    assert s3_storage.objects("raw/") == {}


def test_a_store_that_refuses_writes_fails_the_batch_and_commits_no_row(
    account, settings, s3_storage
):
    """The bucket is gone: nothing is stored as damaged or dead-lettered (the store is
    infrastructure, not the messages' fault), nothing commits, and the batch can be retried."""
    settings.RAW_IN_ROW_MAX_BYTES = 0
    s3_storage.client.delete_bucket(Bucket=s3_storage.name)
    raws = three_mails()

    with pytest.raises(OBJECT_STORE_ERRORS, match="NoSuchBucket"):
        messages_upsert(account=account, items=[incoming(raw, "INBOX") for raw in raws])
    assert Message.objects.count() == 0 and DeadLetter.objects.count() == 0
    account.refresh_from_db()
    assert account.last_error == ""

    s3_storage.client.create_bucket(Bucket=s3_storage.name)
    assert messages_upsert(account=account, items=[incoming(r, "INBOX") for r in raws]).created == 3
    assert [m.raw.content() for m in Message.objects.order_by("sort_date")] == raws


def test_media_storage_s3_is_set_from_the_environment(s3_bucket, tmp_path):
    """What an operator sets (MEDIA_STORAGE=s3 and the S3_* variables) makes a worker write
    to and read from the bucket."""
    env = {
        **os.environ,
        "MEDIA_STORAGE": "s3",
        "S3_BUCKET": s3_bucket.name,
        "S3_ENDPOINT_URL": s3_bucket.server.endpoint,
        "S3_REGION_NAME": REGION,
        "S3_ACCESS_KEY_ID": ACCESS_KEY,
        "S3_SECRET_ACCESS_KEY": SECRET_KEY,
        "S3_LOCATION": "mail",
        "MEDIA_ROOT": str(tmp_path),
    }
    script = (
        "from django.core.files.base import ContentFile\n"
        "from django.core.files.storage import default_storage as s\n"
        "name = s.save('raw/1/probe.zs', ContentFile(b'probe'))\n"
        "print(type(s._wrapped).__name__, name, s.open(name).read().decode())\n"
    )
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout
    assert out.splitlines()[-1].split() == ["MailObjectStorage", "raw/1/probe.zs", "probe"]
    assert s3_bucket.get("mail/raw/1/probe.zs") == b"probe"
    assert list(tmp_path.iterdir()) == []


def test_deleting_an_account_removes_its_objects_from_the_bucket(
    account, settings, s3_storage, django_capture_on_commit_callbacks
):
    from messages.services import account_delete

    settings.RAW_IN_ROW_MAX_BYTES = 0
    messages_upsert(account=account, items=[incoming(raw, "INBOX") for raw in three_mails()])
    assert len(s3_storage.objects()) == 4  # a segment and three attachments

    account.status = account.Status.DELETING
    account.save()
    with django_capture_on_commit_callbacks(execute=True):
        assert account_delete(account_id=account.pk)
    assert s3_storage.objects() == {}


def test_a_staged_message_is_read_from_the_bucket_and_a_missing_one_is_dead_lettered(
    account, settings, s3_storage
):
    settings.INLINE_RAW_LIMIT_BYTES = 1000
    raw = make_mail("staged", attachments=[("b.bin", "application/octet-stream", b"z" * 5000)])
    item = topics.new_message_item(raw, folder="INBOX", uid=1)
    ref = item["rawRef"]
    assert ref in s3_storage.objects("staged/")
    outcome = ingest_new_messages.apply(
        args=[topics.new_message_payload(account.pk, "imap", [item])]
    )
    assert outcome.get()["created"] == 1
    assert Message.objects.get().raw.content() == raw
    assert s3_storage.objects("staged/") == {}

    lost = topics.new_message_item(make_mail("lost", body="x" * 2000), folder="INBOX", uid=2)
    s3_storage.client.delete_object(Bucket=s3_storage.name, Key=lost["rawRef"])
    ingest_new_messages.apply(args=[topics.new_message_payload(account.pk, "imap", [lost])])
    assert "does not exist" in DeadLetter.objects.get().reason
    assert Message.objects.count() == 1
