"""The storage sweeper removes media files no row names once they are older than the grace
period, and keeps young ones and named ones; a process's temp work lives in a directory of its
own, which a later process removes when the first one died without cleaning up (kill -9)."""

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone

from emailplatform import tempdirs
from messages.ingest import messages_upsert
from messages.models import Attachment, IngestBatch, RawMessage
from messages.storage_sweep import storage_sweep
from tests.conftest import incoming
from tests.mailfactory import make_mail

ROOT = Path(__file__).resolve().parent.parent.parent
HOUR = 3600


def put(name: str, age_seconds: float) -> str:
    name = default_storage.save(name, ContentFile(b"leftover"))
    age(name, age_seconds)
    return name


def in_flight(account, staged: str, *, hours_ago: float) -> IngestBatch:
    """A batch on the queue whose big message travels in STAGED."""
    return IngestBatch.objects.create(
        account=account,
        staged=[staged],
        publisher="test",
        fetched_at=timezone.now() - timedelta(hours=hours_ago),
    )


def age(name: str, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(default_storage.path(name), (then, then))


@pytest.mark.django_db
def test_sweeper_removes_old_unnamed_files_and_keeps_the_rest(account, settings):
    settings.STORAGE_SWEEP_GRACE_SECONDS = HOUR
    settings.RAW_IN_ROW_MAX_BYTES = 0  # a segment file, even for one message
    raw = make_mail("kept", attachments=[("a.bin", "application/octet-stream", b"a" * 3000)])
    messages_upsert(account=account, items=[incoming(raw, "INBOX")])
    segment = RawMessage.objects.get().file.name
    attachment = Attachment.objects.get().file.name
    age(segment, 2 * HOUR)  # old, but named by a row
    age(attachment, 2 * HOUR)
    orphan_segment = put(f"raw/{account.pk}/202601/crashed-batch.zs", 2 * HOUR)
    young_segment = put(f"raw/{account.pk}/202601/batch-in-flight.zs", 60)
    orphan_attachment = put("attachments/ab/ab" + "0" * 62, 2 * HOUR)
    staged = put("staged/on-the-queue.eml", 10 * HOUR)
    in_flight(account, staged, hours_ago=10)
    orphan_staged = put("staged/of-a-lost-batch.eml", 10 * HOUR)
    stale = in_flight(account, put("staged/of-a-dead-producer.eml", 30 * HOUR), hours_ago=30)

    outcome = storage_sweep()

    assert outcome["raw"] == 1 and outcome["attachments"] == 1
    assert outcome["staged"] == 2 and outcome["batches"] == 1
    assert not IngestBatch.objects.filter(pk=stale.pk).exists()
    for gone in (orphan_segment, orphan_attachment, orphan_staged, *stale.staged):
        assert not default_storage.exists(gone), gone
    for kept in (segment, attachment, young_segment, staged):
        assert default_storage.exists(kept), kept
    stored = RawMessage.objects.get()
    assert stored.content() == raw


@pytest.mark.django_db
def test_sweeper_beat_entry_is_seeded():
    from django_celery_beat.models import PeriodicTask

    task = PeriodicTask.objects.get(task="messages.storage_sweep")
    assert task.enabled and task.queue == "default" and task.interval is not None


def test_a_dead_process_temp_dir_is_removed_when_the_next_one_starts(
    settings, tmp_path, monkeypatch
):
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path)
    host = socket.gethostname()
    # A process killed with SIGKILL in the middle of an ingest batch...
    code = (
        "import tempfile, time, django\n"
        "django.setup()\n"
        "from emailplatform.tempdirs import process_temp_dir\n"
        "work = tempfile.TemporaryDirectory(prefix='ingest-', dir=process_temp_dir())\n"
        "open(work.name + '/part', 'wb').write(b'x' * 1000)\n"
        "print(work.name, flush=True)\n"
        "time.sleep(120)\n"
    )
    env = {**os.environ, "FILE_UPLOAD_TEMP_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        leftover = Path(proc.stdout.readline().strip())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert leftover.is_dir() and leftover.parent.name == f"emailplatform-{host}-{proc.pid}"
    # ...beside the directory of a process that still runs, and another host's.
    alive = tmp_path / f"emailplatform-{host}-{os.getppid()}"
    alive.mkdir()
    other_host = tmp_path / f"emailplatform-elsewhere-{proc.pid}"
    other_host.mkdir()

    monkeypatch.setattr(tempdirs, "_made", {})  # as in a process that starts now
    mine = Path(tempdirs.process_temp_dir())

    assert not leftover.parent.exists()
    assert alive.is_dir() and other_host.is_dir()
    assert mine == tmp_path / f"emailplatform-{host}-{os.getpid()}" and mine.is_dir()
    assert tempdirs.process_temp_dir() == str(mine)
