"""The EmailNewMessage consumer's service: store a published batch once, and only if wanted.

Batches may be consumed in any order, twice, by two workers at once, or long after the sync
that fetched them moved on. What keeps the store right (each rule is tested with batches
consumed out of order and twice, tests/messages/test_batch_store.py):

1. Written once. A batch's `IngestBatch` row is locked (SELECT ... FOR UPDATE) in the
   transaction that writes it and marked stored there (deleted there when its producer stores
   it itself, as nobody else waits for it); a batch whose row is stored or gone
   changes nothing (a redelivery, a copy consumed beside it, a batch its producer gave up on
   and published again, or one voided by the rules below).
2. Nothing resurrected. A removal seen by a sync (expunge, move away) strips its UIDs from the
   rows of the folder's batches still in flight (`mailbox.locations_remove`); a UIDVALIDITY
   change or the folder's deletion deletes them (`mailbox.folder_reset`, the foreign key); and
   each sync pass deletes the rows a dead pass left (`batches.batches_void`), since it fetches
   that mail again itself. A batch stores only the UIDs its row still lists, and only while its
   folder keeps the UIDVALIDITY it was fetched at.
   Batches of a provider without UIDs (Gmail) list provider ids instead (`IngestBatch.
   provider_ids`): a deletion seen by a sync strips those ids from the account's batches in
   flight before it deletes the messages (`mailbox.messages_remove`), and a batch stores only
   the messages whose ids its row still lists, so a batch consumed after the deletion does not
   bring the message back.
3. Flags never go back: a stored message's flags carry the time they were read or changed
   (`Message.flags_at`); a batch fetched before that leaves them alone (`ingest._update_flags`).
4. Cursors: a producer moves a folder's UIDNEXT / HIGHESTMODSEQ only after every batch it
   published for the folder is stored (`batches.BatchPublisher.drain`), and it applies the
   folder's flag changes and expunges after that too.
5. Two workers with batches of one account: each locks its batch row, then the account's
   advisory lock (`messages.ingest`), always in that order, so they queue and never deadlock;
   a sync's removal takes batch rows only, never the advisory lock.

A consumer holds its batch under a lease (a Redis key renewed by a heartbeat thread): when
the lease lapses (the worker was killed), the producer fetches the batch again and publishes
it anew, so recovery does not wait for the broker's visibility timeout.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from emailplatform import syncstate, topics

from .held_writes import hold, writes_held
from .ingest import IngestResult, PreparedBatch, messages_write
from .models import Account, Folder, IngestBatch
from .services import dead_letter_record, sync_run_add

logger = logging.getLogger(__name__)


def lease_key(batch_id: int) -> str:
    return f"{syncstate.PREFIX}:ingest-lease:{batch_id}"


def notify_key(publisher: str) -> str:
    return f"{syncstate.PREFIX}:ingest-done:{publisher}"


def batch_store(payload: Any, *, by_producer: bool = False) -> dict[str, Any]:
    """Store one EmailNewMessage payload; a payload that breaks the contract is dead-lettered
    with the reason, and so is a message that cannot be stored even as damaged.

    BY_PRODUCER: the batch's producer stores it itself (inline), so it neither claims it nor
    takes a lease (those tell the producer that a consumer is alive) nor wakes anyone; rule 1
    still holds through the row's lock in `_write`."""
    batch_id = _batch_id(payload)
    if batch_id is not None and not by_producer and not _claim(batch_id):
        return {"skipped": f"batch {batch_id} is stored already or no longer wanted"}
    with _lease(None if by_producer else batch_id):
        try:
            batch = topics.parse_new_message_payload(payload)
        except topics.PayloadError as exc:
            if batch_id is not None and not _wanted(batch_id):
                # e.g. a redelivery whose staged blobs its first delivery consumed
                return {"skipped": f"batch {batch_id} is stored already or no longer wanted"}
            return _reject(payload, str(exc), batch_id)
        try:
            account = Account.objects.filter(pk=batch.account_id).first()
            if account is None:
                return _reject(payload, f"accountId: account {batch.account_id} does not exist")
            with PreparedBatch(batch.messages) as prepared:
                result = _write(account, batch, prepared, by_producer=by_producer)
        finally:
            topics.release_local_copies(batch.messages)
    staged = [m.staged_ref for m in batch.messages if m.staged_ref]
    if staged:
        topics.delete_staged(staged)
    if result is None:
        return {"skipped": f"batch {batch_id} is stored already or no longer wanted"}
    logger.info(
        "ingested account=%s batch=%s created=%s updated=%s unchanged=%s damaged=%s "
        "dead_letters=%s",
        account.pk,
        batch_id,
        result.created,
        result.updated,
        result.unchanged,
        result.damaged,
        len(result.dead_letters),
    )
    outcome: dict[str, Any] = {
        "created": result.created,
        "updated": result.updated,
        "unchanged": result.unchanged,
        "damaged": result.damaged,
        "deadLetters": [d.letter_id for d in result.dead_letters],
    }
    if by_producer and batch_id is not None:
        # Its row went in the write's transaction: what the producer would have read there.
        outcome["rowDeleted"] = {
            "deadLetters": len(result.dead_letters),
            "deadLetterUids": _dead_letter_uids(result),
            "deadLetterProviderIds": _dead_letter_provider_ids(result),
            "problems": result.problems_text()[:2000],
        }
    return outcome


def _write(
    account: Account, batch: topics.NewMessageBatch, prepared: PreparedBatch, *, by_producer: bool
) -> IngestResult | None:
    """One transaction: the batch row (rule 1), what it still wants (rule 2), the write, the
    row marked stored (deleted, BY_PRODUCER: its producer has the outcome already), the run's
    progress. None: nothing to do (rule 1)."""
    with transaction.atomic():
        row = None
        folders: list[Folder] = []
        if batch.batch_id is not None:
            row = (
                IngestBatch.objects.select_for_update(of=("self",))
                .select_related("folder")
                .filter(pk=batch.batch_id)
                .first()
            )
            if row is None or row.stored_at is not None:
                return None
            _keep_wanted(row, prepared)
            if row.folder is not None:
                folders.append(row.folder)
        as_of = row.fetched_at if row is not None else None
        with writes_held():  # fewer round trips: see messages.held_writes
            result = messages_write(
                account=account, batch=prepared, flags_as_of=as_of, known_folders=folders
            )
            if batch.sync_run_id:
                with hold():
                    sync_run_add(run_id=batch.sync_run_id, result=result)
            _row_done(row, result, by_producer)
    return result


def _row_done(row: IngestBatch | None, result: IngestResult, by_producer: bool) -> None:
    """Rule 1: the row marked stored (deleted when its producer stores it)."""
    if row is None:
        return
    if by_producer:
        with connection.cursor() as cursor:  # no Collector: nothing refers to the row
            cursor.execute(f"DELETE FROM {IngestBatch._meta.db_table} WHERE id = %s", [row.pk])
        return
    row.stored_at = timezone.now()
    row.dead_letter_uids = _dead_letter_uids(result)
    if row.provider_ids is not None:
        row.dead_letter_provider_ids = _dead_letter_provider_ids(result)
    row.dead_letters = len(result.dead_letters)
    row.problems = result.problems_text()[:2000]
    row.save(
        update_fields=[
            "stored_at",
            "dead_letters",
            "dead_letter_uids",
            "dead_letter_provider_ids",
            "problems",
        ]
    )
    publisher = row.publisher
    transaction.on_commit(lambda: _notify(publisher))


def _dead_letter_uids(result: IngestResult) -> list[int]:
    return sorted({d.item.uid for d in result.dead_letters if d.item.uid is not None})


def _dead_letter_provider_ids(result: IngestResult) -> list[str]:
    return sorted({d.item.provider_id for d in result.dead_letters if d.item.provider_id})


def _keep_wanted(row: IngestBatch, prepared: PreparedBatch) -> None:
    """Rule 2: drop the messages of ROW's folder that it no longer lists, or all of them when
    the folder's UIDVALIDITY is no longer the one they were fetched at; for a batch keyed by
    provider ids, drop the messages whose id it no longer lists."""
    if row.provider_ids is not None:
        listed_ids = set(row.provider_ids)
        prepared.prepared = [p for p in prepared.prepared if p.item.provider_id in listed_ids]
    if row.folder_id is None:
        return
    folder = row.folder
    if folder is None:
        prepared.prepared = []
        return
    valid = row.uidvalidity is None or folder.uidvalidity in (None, row.uidvalidity)
    listed = set(row.uids) if valid else set()
    prepared.prepared = [
        p
        for p in prepared.prepared
        if folder.name not in p.item.folders or (p.item.uid is not None and p.item.uid in listed)
    ]


def _batch_id(payload: Any) -> int | None:
    value = payload.get("batchId") if isinstance(payload, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def _claim(batch_id: int) -> bool:
    """Take the batch's lease and mark it claimed; False when it is not wanted (rule 1)."""
    _lease_renew(batch_id)
    claimed = IngestBatch.objects.filter(pk=batch_id, stored_at__isnull=True).update(
        claimed_at=timezone.now()
    )
    return bool(claimed)


def _wanted(batch_id: int) -> bool:
    return IngestBatch.objects.filter(pk=batch_id, stored_at__isnull=True).exists()


@contextmanager
def _lease(batch_id: int | None) -> Iterator[None]:
    """Renew the batch's lease every third of INGEST_LEASE_SECONDS while the body runs."""
    if batch_id is None:
        yield
        return
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(max(0.2, settings.INGEST_LEASE_SECONDS / 3)):
            _lease_renew(batch_id)

    thread = threading.Thread(target=heartbeat, name=f"ingest-lease-{batch_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        _quietly(lambda: syncstate.client().delete(lease_key(batch_id)))


def _lease_renew(batch_id: int) -> None:
    _quietly(
        lambda: syncstate.client().set(
            lease_key(batch_id), 1, ex=max(1, settings.INGEST_LEASE_SECONDS)
        )
    )


def _notify(publisher: str) -> None:
    def push() -> None:
        client = syncstate.client()
        key = notify_key(publisher)
        client.lpush(key, 1)
        client.expire(key, 3600)

    _quietly(push)


def _quietly(function) -> None:
    """Leases and notices only speed recovery up; Redis failing must not fail the write."""
    try:
        function()
    except redis.RedisError as exc:
        logger.warning("ingest lease/notice not written: %s", exc)


def _reject(payload: Any, reason: str, batch_id: int | None = None) -> dict[str, Any]:
    letter = dead_letter_record(
        task_name=topics.TASK_INGEST_NEW_MESSAGES, reason=reason, payload=payload
    )
    row = IngestBatch.objects.filter(pk=batch_id).first() if batch_id is not None else None
    if row is not None:
        # Stored as far as it can be: its producer must neither wait for it nor fetch it again.
        IngestBatch.objects.filter(pk=row.pk, stored_at__isnull=True).update(
            stored_at=timezone.now(),
            dead_letters=max(1, len(row.uids), len(row.provider_ids or ())),
            dead_letter_uids=F("uids"),
            dead_letter_provider_ids=row.provider_ids or [],
            problems=f"{len(row.uids)} messages could not be stored: {reason} "
            f"(dead letter #{letter.pk})"[:2000],
        )
        _notify(row.publisher)
    logger.warning("dead-lettered EmailNewMessage payload %s: %s", letter.pk, reason)
    return {"deadLetter": letter.pk, "reason": reason}
