"""The storage sweeper: media files that no row names, and temp dirs of dead processes.

Files are written before the rows that name them commit (a raw segment is fsynced first, so a
committed row never names a missing file). A process killed between the two (kill -9, OOM, a
lost container) leaves the file with no row; so does a deletion whose after-commit file removal
never ran. Beat runs this every STORAGE_SWEEP_INTERVAL_MINUTES: a file under `raw/` that no
RawMessage names, under `attachments/` that no Attachment names, or under `outbound/` (files
uploaded for outbound mail) that no OutboundAttachment names, is removed once it is older
than STORAGE_SWEEP_GRACE_SECONDS (far longer than a batch takes from its write to its commit,
which the task time limit bounds). `staged/` (big messages on their way through the queue) is
removed once no batch in flight (an `IngestBatch` row not yet stored) names it; batch rows
older than INGEST_BATCH_RETENTION_HOURS are pruned first (their producer died, and a sync
fetches their mail again; a task still queued for one is skipped). On S3 (MEDIA_STORAGE=s3)
the same holds for objects, and multipart uploads a dead process left incomplete are aborted.

Each pass lists the files and reads the referenced names once (one query per kind), so its
memory grows with the number of files; at many millions of attachments, an index on
Attachment.file and a per-directory query would be the next step.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from celery import shared_task
from django.conf import settings
from django.core.files.storage import Storage, default_storage
from django.db.models import QuerySet
from django.utils import timezone

from emailplatform.object_storage import files_older_than, stale_uploads_abort
from emailplatform.tempdirs import temp_dirs_remove_dead

from .models import Attachment, IngestBatch, OutboundAttachment, RawMessage

logger = logging.getLogger(__name__)

TASK_STORAGE_SWEEP = "messages.storage_sweep"
RECHECK_CHUNK = 1000

# The storage directories the sweeper owns, and the rows whose `file` names their files.
SWEPT: dict[str, type[RawMessage] | type[Attachment] | type[OutboundAttachment]] = {
    "raw": RawMessage,
    "attachments": Attachment,
    "outbound": OutboundAttachment,
}


def storage_sweep(*, now: datetime | None = None, storage: Storage | None = None) -> dict:
    """Remove the unnamed media files older than the grace period, and dead processes' temp
    dirs; what was removed, counted."""
    storage = storage or default_storage
    cutoff = (now or timezone.now()) - timedelta(seconds=settings.STORAGE_SWEEP_GRACE_SECONDS)
    outcome: dict = {}
    for root, model in SWEPT.items():
        removed = _sweep(storage, root, cutoff, model)
        outcome[root] = len(removed)
        if removed:
            logger.warning(
                "storage sweep: removed %d file(s) under %s/ that no row names, e.g. %s",
                len(removed),
                root,
                removed[:3],
            )
    retention = timedelta(hours=settings.INGEST_BATCH_RETENTION_HOURS)
    outcome["batches"], _ = IngestBatch.objects.filter(
        fetched_at__lt=(now or timezone.now()) - retention
    ).delete()
    outcome["staged"] = len(_sweep_staged(storage, cutoff))
    outcome["uploads"] = stale_uploads_abort(storage, cutoff)
    outcome["tempDirs"] = len(temp_dirs_remove_dead())
    return outcome


@shared_task(name=TASK_STORAGE_SWEEP, ignore_result=True)
def storage_sweep_task() -> dict:
    return storage_sweep()


def _sweep(storage: Storage, root: str, cutoff: datetime, model) -> list[str]:
    candidates = set(files_older_than(storage, root, cutoff))
    if not candidates:
        return []
    for name in _named(model.objects.all()).iterator(chunk_size=10_000):
        candidates.discard(name)
    removed = []
    orphans = sorted(candidates)
    for start in range(0, len(orphans), RECHECK_CHUNK):
        chunk = orphans[start : start + RECHECK_CHUNK]
        # Once more, just before removing: a row may have committed since the listing.
        named_now = set(_named(model.objects.filter(file__in=chunk)))
        for name in chunk:
            if name not in named_now:
                storage.delete(name)
                removed.append(name)
    return removed


def _sweep_staged(storage: Storage, cutoff: datetime) -> list[str]:
    candidates = sorted(files_older_than(storage, "staged", cutoff))
    removed = []
    for start in range(0, len(candidates), RECHECK_CHUNK):
        chunk = candidates[start : start + RECHECK_CHUNK]
        wanted = IngestBatch.objects.filter(stored_at__isnull=True, staged__overlap=chunk)
        named = {name for names in wanted.values_list("staged", flat=True) for name in names}
        for name in chunk:
            if name not in named:
                storage.delete(name)
                removed.append(name)
    return removed


def _named(rows: QuerySet) -> QuerySet:
    return rows.exclude(file="").values_list("file", flat=True).distinct()
