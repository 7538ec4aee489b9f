"""kill -9 in the middle of a sync leaks no files for good: the restarted worker removes the
killed one's temporary directory, and the storage sweeper removes raw segments and attachment
files that no row names, while every stored message stays readable."""

import os
import socket
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from django.db import connection

from emailplatform import topics
from messages.models import Attachment, Message, RawMessage
from messages.storage_sweep import storage_sweep
from tests.imap_fixtures import assert_store_matches_server
from tests.mailfactory import make_mail
from tests.worker import start_worker, stop_worker, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

COUNT = 300


def stored_files(root: str) -> set[str]:
    base = Path(default_storage.path(root))
    return {str(p.relative_to(default_storage.path(""))) for p in base.rglob("*") if p.is_file()}


def unnamed_raw() -> set[str]:
    if not default_storage.exists("raw"):
        return set()
    return stored_files("raw") - set(RawMessage.objects.values_list("file", flat=True))


def test_files_left_by_a_killed_worker_are_removed(imap_account, imap_user, tmp_path, settings):
    attachment = [("a.bin", "application/octet-stream", b"attachment bytes " * 64)]
    imap_user.append(
        "INBOX",
        *[
            make_mail(f"m{i}", message_id=f"<m{i}@x>", minutes=i, attachments=attachment)
            for i in range(COUNT)
        ],
    )
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {
        "IMAP_FETCH_BATCH": "50",
        "RAW_IN_ROW_MAX_BYTES": "0",  # every batch writes a segment file, to be killed after
        "CELERY_VISIBILITY_TIMEOUT": "5",
        "SYNC_LOCK_TTL_SECONDS": "10",
        "CELERY_UNACKED_RESTORE_INTERVAL": "1",
        "CELERY_UNACKED_RESTORE_THROTTLE": "1",
        "FILE_UPLOAD_TEMP_DIR": str(temp),
    }
    log = tmp_path / "worker.log"
    stored = lambda: Message.objects.filter(account=imap_account).count()  # noqa: E731
    try:
        worker = start_worker([topics.QUEUE_FULL_SYNC], log, env, pool="solo")
        try:
            topics.publish_full_sync(imap_account.pk, "imap", {})
            # Kill it between a batch's segment write and its commit: a file no row names yet.
            wait_for(unnamed_raw, what="a segment written, its rows not", timeout=60, interval=0)
            worker.kill()
            worker.wait()
        finally:
            stop_worker(worker)
        leaked = unnamed_raw()
        assert leaked, "the killed batch's segment is left behind"
        killed_dir = temp / f"emailplatform-{socket.gethostname()}-{worker.pid}"
        assert killed_dir.is_dir(), "the killed worker's temp dir is left behind"

        worker = start_worker([topics.QUEUE_FULL_SYNC], log, env, pool="solo")
        try:
            wait_for(lambda: stored() == COUNT, timeout=90, what=f"{COUNT} after restart")
        finally:
            stop_worker(worker)
        assert not killed_dir.exists(), "the next process removed the dead one's temp dir"

        settings.STORAGE_SWEEP_GRACE_SECONDS = 0
        outcome = storage_sweep()
        assert outcome["raw"] >= len(leaked)
        assert not any(default_storage.exists(name) for name in leaked)
        named = set(RawMessage.objects.values_list("file", flat=True))
        named |= set(Attachment.objects.values_list("file", flat=True))
        assert stored_files("raw") | stored_files("attachments") <= named
        assert_store_matches_server(imap_account, imap_user)
        assert all(raw.content() for raw in RawMessage.objects.all())
        assert not os.listdir(temp) or all(
            not any(Path(temp, d).iterdir()) for d in os.listdir(temp)
        ), "no temporary work is left once the workers are stopped"
    except AssertionError:
        print(log.read_text()[-20000:])
        raise
    finally:
        connection.close()
