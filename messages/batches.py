"""The producers' side of the message pipeline: publish new mail in batches, boundedly, and
know when it is stored.

A provider's sync (and `import_mail`) fetches mail and hands it to a `BatchPublisher`, which
records each batch (an `IngestBatch` row) and publishes it on `email_new_message`. It never has
more than INGEST_MAX_BATCHES_IN_FLIGHT batches not yet stored (`publish` waits), so a mailbox of
a million messages is never in Redis or the blob store at once; `drain` waits until every batch
is stored, which is what a sync's progress and "done" mean, and before a folder's cursor moves.

Losses are the producer's to repair, since it can fetch again and nobody else can: a batch
whose consumer's lease lapsed (the worker was killed), that no consumer claimed within
INGEST_QUEUE_TIMEOUT_SECONDS or before Redis lost its data, or that the queue went past (a
batch published after it was claimed CLAIM_GRACE ago, but it was not: the queue is first in,
first out, so a worker took it and died before claiming it, and Redis would give it back only
after its visibility timeout, hours later) is reported by `drain` (its row deleted, so a late
copy of it changes nothing) and the sync fetches those UIDs (Gmail: those message ids) again. A
producer that dies leaves rows that the account's next pass voids (`batches_void`).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from emailplatform import syncstate, topics

from .batch_store import batch_store, lease_key, notify_key
from .models import Folder, IngestBatch

logger = logging.getLogger(__name__)

EPOCH_KEY = f"{syncstate.PREFIX}:ingest-epoch"
# A claimed batch is lost when its lease is gone and it was claimed longer ago than this.
CLAIM_GRACE = timedelta(seconds=5)
WAKE_SECONDS = 1


@dataclass
class _Sent:
    folder_id: int | None
    uids: list[int]
    sent_at: datetime
    epoch: str | None
    provider_ids: list[str] | None = None


@dataclass
class DrainOutcome:
    """What became of the batches since the last drain."""

    lost: dict[int | None, set[int]] = field(default_factory=dict)  # folder id -> UIDs
    lost_provider_ids: set[str] = field(default_factory=set)  # of batches keyed by them
    dead_letter_uids: dict[int | None, set[int]] = field(default_factory=dict)
    dead_letter_provider_ids: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    dead_letters: int = 0
    lost_batches: int = 0


def batches_void(account_id: int, *, keep_publisher: str = "") -> int:
    """Delete the account's sync batches (a folder's, or keyed by provider ids) not yet stored
    (but KEEP_PUBLISHER's): called by a sync pass under the account's lock, so their producer
    is dead, and the pass fetches what they held again itself (rule 2 of
    messages.batch_store). Their staged blobs go with them."""
    left = (
        IngestBatch.objects.filter(account_id=account_id, stored_at__isnull=True)
        .filter(Q(folder__isnull=False) | Q(provider_ids__isnull=False))
        .exclude(publisher=keep_publisher)
    )
    rows = list(left.values_list("pk", "staged"))
    if not rows:  # the usual case: one round trip, not a transaction's three
        return 0
    deleted, _ = IngestBatch.objects.filter(pk__in=[pk for pk, _staged in rows]).delete()
    topics.delete_staged(ref for _pk, staged in rows for ref in staged)  # a reader finds no row
    return deleted


class BatchPublisher:
    """Publishes one producer's batches of one account and tracks them until stored.

    ON_WAIT is called while it waits (a sync extends its lock there; it may raise to stop).
    INLINE (default: settings.INGEST_DELIVERY == "inline") stores each batch in this process,
    through the same consumer service, instead of publishing it; INLINE=None (the default) also
    stores a small batch here (`stores_inline`), as its producer would only wait for it."""

    def __init__(
        self,
        account_id: int,
        provider: str,
        *,
        sync_run_id: int | None = None,
        on_wait: Callable[[], None] | None = None,
        inline: bool | None = None,
        max_in_flight: int | None = None,
    ) -> None:
        self.account_id = account_id
        self.provider = provider
        self.sync_run_id = sync_run_id
        self.on_wait = on_wait
        self.inline = settings.INGEST_DELIVERY == "inline" if inline is None else inline
        self.inline_small = inline is None  # INLINE=False: every batch on the queue
        self.max_in_flight = max(1, max_in_flight or settings.INGEST_MAX_BATCHES_IN_FLIGHT)
        self.publisher = uuid.uuid4().hex
        self.in_flight: dict[int, _Sent] = {}
        self.claims: dict[int, datetime] = {}  # batch id -> claimed at, of batches in flight
        self.outcome = DrainOutcome()

    def publish(
        self,
        items: list[dict[str, Any]],
        *,
        fetched_at: datetime,
        folder: Folder | None = None,
        uids: list[int] | None = None,
        provider_ids: list[str] | None = None,
    ) -> None:
        """Publish one batch (payload items from `topics.new_message_item`); waits first while
        the account has max_in_flight batches not stored. A batch of a FOLDER lists its UIDS;
        one of a provider without UIDs (Gmail) lists its PROVIDER_IDS instead (rule 2)."""
        self._wait_until(lambda: len(self.in_flight) < self.max_in_flight)
        row = IngestBatch.objects.create(
            account_id=self.account_id,
            sync_run_id=self.sync_run_id,
            folder=folder,
            uidvalidity=folder.uidvalidity if folder is not None else None,
            uids=sorted(set(uids or [])),
            provider_ids=sorted(set(provider_ids)) if provider_ids is not None else None,
            staged=list(dict.fromkeys(item["rawRef"] for item in items if "rawRef" in item)),
            publisher=self.publisher,
            fetched_at=fetched_at,
        )
        payload = topics.new_message_payload(
            self.account_id, self.provider, items, self.sync_run_id, batch_id=row.pk
        )
        inline = self.inline or (self.inline_small and stores_inline(items))
        epoch = None if inline else _epoch()  # inline: never on a queue Redis could lose
        self.in_flight[row.pk] = _Sent(
            row.folder_id, row.uids, timezone.now(), epoch, row.provider_ids
        )
        if inline:
            stored = batch_store(payload, by_producer=True).get("rowDeleted")
            if stored is not None:
                self._stored_here(row.pk, stored)
            self._collect()
            return
        try:
            topics.send_new_messages(payload)
        except Exception:
            self.in_flight.pop(row.pk, None)
            row.delete()
            raise

    def queues(self, count: int, raw_bytes: int) -> bool:
        """Whether a batch of COUNT messages of RAW_BYTES in all, none staged, goes to the
        queue (rather than being stored here): its producer may then stage it as one blob
        (`topics.new_message_items_staged`). Pure: safe from the prefetch thread."""
        return not (self.inline or (self.inline_small and count and _small(count, raw_bytes)))

    def drain(self) -> DrainOutcome:
        """Wait until every batch published is stored or lost; return (and forget) what
        became of them."""
        self._wait_until(lambda: not self.in_flight)
        outcome, self.outcome = self.outcome, DrainOutcome()
        return outcome

    # Waiting -----------------------------------------------------------------------------
    def _wait_until(self, done: Callable[[], bool]) -> None:
        while True:
            self._collect()
            if done():
                return
            if self.on_wait is not None:
                self.on_wait()
            self._sleep()

    def _sleep(self) -> None:
        """Until a consumer says it stored a batch of ours, at most WAKE_SECONDS."""
        try:
            syncstate.client().blpop([notify_key(self.publisher)], timeout=WAKE_SECONDS)
        except redis.RedisError:
            time.sleep(WAKE_SECONDS)

    def _collect(self) -> None:
        if not self.in_flight:
            return
        rows = {
            row.pk: row
            for row in IngestBatch.objects.filter(pk__in=list(self.in_flight)).only(
                "id",
                "folder_id",
                "uids",
                "provider_ids",
                "staged",
                "claimed_at",
                "stored_at",
                "dead_letters",
                "dead_letter_uids",
                "dead_letter_provider_ids",
                "problems",
            )
        }
        done, lost = [], []
        live = self._live_leases([r for r in rows.values() if r.stored_at is None])
        now = timezone.now()
        unclaimed = any(r.stored_at is None and r.claimed_at is None for r in rows.values())
        current_epoch = _epoch() if unclaimed else None
        self.claims.update((r.pk, r.claimed_at) for r in rows.values() if r.claimed_at)
        passed = max((pk for pk, at in self.claims.items() if now - at > CLAIM_GRACE), default=0)
        for batch_id, sent in list(self.in_flight.items()):
            row = rows.get(batch_id)
            if row is None:
                # Voided by someone else (a pass that took the account over; a folder reset or
                # deletion): not stored, so fetched again if still there, never counted done.
                self.in_flight.pop(batch_id)
                self.outcome.lost.setdefault(sent.folder_id, set()).update(sent.uids)
                self.outcome.lost_provider_ids.update(sent.provider_ids or ())
                self.outcome.lost_batches += 1
                continue
            if row.stored_at is not None:
                done.append(row)
            elif row.claimed_at is not None:
                if batch_id not in live and now - row.claimed_at > CLAIM_GRACE:
                    lost.append(row)
            elif (
                batch_id < passed
                or now - sent.sent_at > timedelta(seconds=settings.INGEST_QUEUE_TIMEOUT_SECONDS)
                or (current_epoch is not None and sent.epoch != current_epoch)
            ):
                lost.append(row)
        for row in done:
            self.in_flight.pop(row.pk)
            if row.dead_letter_uids:
                self.outcome.dead_letter_uids.setdefault(row.folder_id, set()).update(
                    row.dead_letter_uids
                )
            self.outcome.dead_letter_provider_ids.update(row.dead_letter_provider_ids)
            self.outcome.dead_letters += row.dead_letters
            if row.problems:
                self.outcome.problems.append(row.problems)
        for row in lost:
            self.in_flight.pop(row.pk)
            topics.delete_staged(row.staged)  # a consumer still reading finds its row gone
            self.outcome.lost.setdefault(row.folder_id, set()).update(row.uids)
            self.outcome.lost_provider_ids.update(row.provider_ids or ())
            self.outcome.lost_batches += 1
            logger.warning(
                "account %s: batch %s was not stored (its consumer stopped, or the queue lost "
                "it); its %d messages are fetched again",
                self.account_id,
                row.pk,
                len(row.uids) or len(row.provider_ids or ()),
            )
        oldest = min(self.in_flight, default=None)
        self.claims = {pk: at for pk, at in self.claims.items() if oldest and pk > oldest}
        finished = [row.pk for row in (*done, *lost)]
        if finished:
            # Stored rows have told us all; lost ones go so that a late copy changes nothing.
            IngestBatch.objects.filter(pk__in=finished).delete()

    def _stored_here(self, batch_id: int, stored: dict[str, Any]) -> None:
        """A batch this producer stored itself: its outcome, without reading its row back."""
        sent = self.in_flight.pop(batch_id)
        if stored["deadLetterUids"]:
            self.outcome.dead_letter_uids.setdefault(sent.folder_id, set()).update(
                stored["deadLetterUids"]
            )
        self.outcome.dead_letter_provider_ids.update(stored["deadLetterProviderIds"])
        self.outcome.dead_letters += stored["deadLetters"]
        if stored["problems"]:
            self.outcome.problems.append(stored["problems"])

    def _live_leases(self, rows: list[IngestBatch]) -> set[int]:
        claimed = [row.pk for row in rows if row.claimed_at is not None]
        if not claimed:
            return set()
        try:
            values = syncstate.client().mget([lease_key(pk) for pk in claimed])
        except redis.RedisError:
            return set(claimed)  # cannot tell: assume alive rather than fetch twice
        return {pk for pk, value in zip(claimed, values, strict=True) if value is not None}


def stores_inline(items: list[dict[str, Any]]) -> bool:
    """A batch its producer stores itself, though delivery is by queue: at most
    INGEST_INLINE_MAX_MESSAGES messages of at most INGEST_INLINE_MAX_BYTES in all, none staged.

    Its producer would wait for it in `drain` anyway (an incremental pass, the tail of a
    folder), so storing it itself costs the pass no time and saves the queue's round trip: an
    IDLE-triggered pass's new mail is stored 20-40 ms sooner (measured). It is recorded and
    stored exactly as a consumer stores it (`batch_store`: the row locked, the rules of that
    module hold)."""
    if not items or any("raw" not in item for item in items):
        return False
    return _small(len(items), sum(len(item["raw"]) for item in items) * 3 // 4)


def _small(count: int, raw_bytes: int) -> bool:
    return (
        count <= settings.INGEST_INLINE_MAX_MESSAGES
        and raw_bytes <= settings.INGEST_INLINE_MAX_BYTES
    )


def _epoch() -> str | None:
    """A token that changes when Redis loses its data (a queued batch is then lost too)."""
    token = uuid.uuid4().hex
    try:
        value = syncstate.client().set(EPOCH_KEY, token, nx=True, get=True)  # one round trip
    except redis.RedisError:
        return None
    if value is None:
        return token
    return value.decode() if isinstance(value, bytes) else value
