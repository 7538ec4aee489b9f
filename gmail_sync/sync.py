"""Gmail sync service: full sync and history sync of one account, between GmailClient and the
store. New mail goes through the message pipeline (`messages.batches.BatchPublisher`), as the
IMAP sync's does; labels, flags and deletions are applied with `messages.mailbox`.

Full sync (`GmailSettings.sync_state["full"]` is its checkpoint):
1. The mailbox's historyId (getProfile) is recorded first: the history sync that follows starts
   there, so nothing that changes during the full sync is missed.
2. messages.list pages (500 ids; SPAM/TRASH per `include_spam_trash`), and for each page the
   messages not in the store are fetched (format raw, batches of at most 50) and published;
   the page token is stored once the page's batches are stored. The store is the checkpoint
   inside a page: a chunk that stops (its time budget, a killed worker) resumes at the stored
   page and fetches only what is still missing. With a date window (`windowDays`) fetching
   stops at the first message older than it (the list is newest first).
3. Reconcile, when the store held messages of the account as the full sync began (a first
   sync skips it: all it stores was fetched after step 1, and step 4 brings what changed
   since): every id Gmail has now, and the members of each label that matters, are listed
   (ids only, 500 a request); stored messages Gmail no longer has are deleted, and every stored
   message's folders and flags are set to its labels exactly.
4. The history id of step 1 becomes the cursor; a history sync runs at once from it.

History sync: every page of users.history.list after the cursor; the ids it names are fetched
in their current state (raw for those not stored, `minimal` for the labels of stored ones),
those answered 404 or listed deleted are removed, the others' labels set exactly. Order does not
matter and running it twice changes nothing; it costs O(changes) requests. The cursor moves
only after all of that is committed. A cursor Gmail no longer knows (404), or a history naming
more messages than HISTORY_FULL_SYNC_THRESHOLD, means a fresh full sync, which reconciles.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from emailplatform.synclock import SyncLockLost
from messages import mailbox
from messages.account_status import account_mark_error, account_mark_ok
from messages.batches import BatchPublisher, DrainOutcome, batches_void
from messages.models import Account, Message, SyncRun
from messages.services import sync_run_finish, sync_run_start
from messages.sync_tasks import SYNC_INFRA_ERRORS

from .client import (
    BatchResult,
    GmailAuthError,
    GmailClient,
    GmailError,
    GmailHistoryExpired,
    GmailRequestError,
    message_internal_date,
)
from .connection import gmail_client_for
from .ids import store_id
from .labels import (
    LabelMap,
    label_map_stored,
    labels_sync,
    message_flags,
    message_item,
)
from .models import GmailSettings

logger = logging.getLogger(__name__)

REFETCH_ROUNDS = 2
# A full sync's checkpoint (the page token) moves every this many pages of 500, once their
# batches are stored; in between, fetching goes on while the message workers store (waiting
# at every page left them idle while the next page was listed and fetched). A resumed sync
# lists those pages again but fetches only what is not stored.
CHECKPOINT_PAGES = 10
LABELS_SET_CHUNK = 1000
FULL = "full"  # GmailSettings.sync_state key of a full sync's checkpoint
# GmailSettings.sync_state key: provider ids of messages dead-lettered (handled: not fetched
# again by later full syncs; Gmail messages never change).
DEAD_LETTERS = "deadLetters"
# A history naming more messages than this is a full sync instead: one get per message (5
# units) would outgrow a task, while a full sync is chunked and lists 500 ids a request.
HISTORY_FULL_SYNC_THRESHOLD = 5000
NOT_FOLDERS = frozenset({"UNREAD", "SPAM", "TRASH"})  # SPAM/TRASH: unless the account asks


@dataclass
class GmailSyncReport:
    new: int = 0
    label_changes: int = 0
    deleted: int = 0
    full: bool = False
    done: bool = True
    passes: int = 1  # 0: nothing was owed (a duplicate or stale trigger)

    def add(self, other: GmailSyncReport) -> None:
        self.new += other.new
        self.label_changes += other.label_changes
        self.deleted += other.deleted
        self.full = self.full or other.full
        self.done = other.done

    def summary(self) -> str:
        state = "complete" if self.done else "paused at its checkpoint (more to do)"
        kind = "full" if self.full else "history"
        return (
            f"{kind} sync: {self.new} new messages, {self.label_changes} label changes, "
            f"{self.deleted} deleted; {state}"
        )


class BudgetExhausted(Exception):
    """This chunk of a long sync used its share; the next chunk resumes at the checkpoint."""


class BatchesLost(Exception):
    """Batches were fetched again and again lost: the pass ends unfinished."""


class HistoryTooLong(Exception):
    """The history names more messages than a full sync costs (HISTORY_FULL_SYNC_THRESHOLD)."""


class GmailAccountSync:
    """One sync pass of one Gmail account."""

    def __init__(
        self,
        account: Account,
        *,
        client: GmailClient | None = None,
        max_messages: int | None = None,
        max_seconds: float | None = None,
        after_batch: Callable[[], None] | None = None,
        options: dict | None = None,
    ) -> None:
        self.account = account
        self.client = client
        self.max_messages = max_messages
        self.deadline = time.monotonic() + max_seconds if max_seconds else None
        self.after_batch = after_batch
        self.report = GmailSyncReport()
        self.requested = 0  # messages asked for by get (the budget's count)
        self.gone: set[str] = set()  # Gmail ids answered 404
        self.problems: list[str] = []
        options = {**(self.account.sync_settings or {}), **(options or {})}
        self.include_attachments = bool(options.get("includeAttachments", True))
        self.skip = set(options.get("skipFolders", []))
        window = options.get("windowDays")
        self.since = datetime.now(UTC) - timedelta(days=int(window)) if window else None
        self.settings, _ = GmailSettings.objects.get_or_create(account=account)
        self.labels: LabelMap | None = None

    # Entry point -------------------------------------------------------------------------
    def sync(self, *, full: bool = False, continuing: bool = False) -> GmailSyncReport:
        """One pass: a full sync when asked (FULL), when one is under way (its checkpoint:
        CONTINUING says so too) or when there is no cursor yet; else a history sync."""
        do_full = full or self.settings.history_id is None or FULL in self.settings.sync_state
        kind = SyncRun.Kind.FULL if do_full else SyncRun.Kind.INCREMENTAL
        self.run = sync_run_start(account=self.account, kind=kind)
        self.publisher = BatchPublisher(
            self.account.pk, "gmail", sync_run_id=self.run.pk, on_wait=self.after_batch
        )
        try:
            batches_void(self.account.pk, keep_publisher=self.publisher.publisher)
            self.client = self.client or gmail_client_for(self.account)
            if do_full:
                self._full()
            else:
                try:
                    self._history(bounded=True)
                except (GmailHistoryExpired, HistoryTooLong) as exc:
                    logger.info("account %s: %r; full sync", self.account.pk, exc)
                    self._restart_full()
        except (BudgetExhausted, SyncLockLost, BatchesLost):
            self.report.done = False
        except GmailAuthError as exc:
            account_mark_error(self.account, exc.message, auth=True)
            sync_run_finish(run=self.run, error=exc.message)
            raise
        except GmailError as exc:
            account_mark_error(self.account, exc.message)
            sync_run_finish(run=self.run, error=exc.message)
            raise
        except SYNC_INFRA_ERRORS:
            raise  # the run stays "running"; the task's retry or the watchdog hands it on
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            account_mark_error(self.account, f"sync failed: {reason}")
            sync_run_finish(run=self.run, error=reason)
            raise
        if self.report.done:
            account_mark_ok(self.account)
            if self.problems:
                account_mark_error(self.account, "; ".join(self.problems))
        SyncRun.objects.filter(pk=self.run.pk).update(deleted=self.report.deleted)
        sync_run_finish(run=self.run)
        self.report.new = SyncRun.objects.values_list("created", flat=True).get(pk=self.run.pk)
        return self.report

    # Full sync ---------------------------------------------------------------------------
    def _restart_full(self) -> None:
        self._save_state(None)
        SyncRun.objects.filter(pk=self.run.pk).update(kind=SyncRun.Kind.FULL)
        self._full()

    def _full(self) -> None:
        self.report.full = True
        state = self.settings.sync_state.get(FULL)
        if state is None:
            profile = self.client.profile()
            state = {
                "startHistoryId": int(profile["historyId"]),
                "pageToken": None,
                "phase": "fetch",
                "total": int(profile.get("messagesTotal", 0)),
                # An empty store has nothing to reconcile: every message it gets is fetched
                # after startHistoryId, and the history sync from there brings what changed.
                "reconcile": Message.objects.filter(account=self.account).exists(),
            }
            self._save_state(state)
        self._sync_labels()
        stored = Message.objects.filter(account=self.account).count()
        SyncRun.objects.filter(pk=self.run.pk).update(
            progress_total=state["total"], progress_done=F("progress_done") + stored
        )
        pages, unsettled = 0, []  # ids published since the last checkpoint
        while state["phase"] == "fetch":
            try:
                page = self.client.list_messages(
                    page_token=state["pageToken"],
                    include_spam_trash=self.settings.include_spam_trash,
                )
            except GmailRequestError:
                if not state["pageToken"]:
                    raise
                # A page token Gmail no longer takes: list from the start again; what is
                # stored is not fetched twice.
                state = {**state, "pageToken": None}
                continue
            ids = [m["id"] for m in page.messages]
            pages += 1
            state = {**state, "pageToken": page.next_page_token}
            last = not page.next_page_token
            unsettled += ids
            older = self._fetch_new(ids, listing=True, settle=False)
            if older or last or pages % CHECKPOINT_PAGES == 0:
                # The checkpoint moves once what is on its way is stored (what was lost is
                # fetched again). Older than the window: so is the rest.
                older = self._fetch_new(unsettled, listing=True) or older
                unsettled = []
                if older or last:
                    state["phase"] = "reconcile"
                self._save_state(state)
        if state.get("reconcile", True):
            self._reconcile()
        self.settings.history_id = state["startHistoryId"]
        self._save_state(None, "history_id")
        self._history()

    def _reconcile(self) -> None:
        """Deletions and labels of the stored messages, from id lists (see the module)."""
        labels = self._labels_map()
        as_of = timezone.now()
        present = self._list_ids(include_spam_trash=self.settings.include_spam_trash)
        stored = set(
            Message.objects.filter(account=self.account, provider_id__startswith="gm:")
            .values_list("provider_id", flat=True)
            .iterator(chunk_size=10_000)
        )
        gone = stored - {store_id(gid) for gid in present}
        self.report.deleted += mailbox.messages_remove(self.account, gone)
        members: dict[str, set[str]] = {}
        for label in sorted(labels.labels_that_matter()):
            members[label] = self._list_ids(label_ids=[label], include_spam_trash=True)
        state = {}
        for gid in present:
            if store_id(gid) in stored:
                state[gid] = [label for label, ids in members.items() if gid in ids]
        self._labels_set(state, as_of)

    def _list_ids(self, *, include_spam_trash: bool, label_ids: list[str] | None = None) -> set:
        ids: set[str] = set()
        token = None
        while True:
            page = self.client.list_messages(
                page_token=token, include_spam_trash=include_spam_trash, label_ids=label_ids
            )
            ids.update(m["id"] for m in page.messages)
            token = page.next_page_token
            if not token:
                return ids
            if self.after_batch:
                self.after_batch()

    # History sync ------------------------------------------------------------------------
    def _history(self, *, bounded: bool = False) -> None:
        """BOUNDED: raise HistoryTooLong rather than fetch more than the threshold (the
        history after a full sync is fetched whatever its length: that full sync is done)."""
        start = self.settings.history_id
        added, deleted, changed, label_ids = set(), set(), set(), set()
        token, latest = None, start
        while True:
            page = self.client.history_page(start, page_token=token)
            latest = max(latest, page.history_id)
            for record in page.records:
                for entry in record.get("messagesAdded", ()):
                    added.add(entry["message"]["id"])
                    label_ids.update(entry["message"].get("labelIds", ()))
                for entry in record.get("messagesDeleted", ()):
                    deleted.add(entry["message"]["id"])
                for key in ("labelsAdded", "labelsRemoved"):
                    for entry in record.get(key, ()):
                        changed.add(entry["message"]["id"])
                        label_ids.update(entry.get("labelIds", ()))
            token = page.next_page_token
            if not token:
                break
        if label_ids - self._labels_map().folder_labels - self.skip - NOT_FOLDERS:
            self._sync_labels()  # a label this store has not seen
        touched = (added | changed) - deleted
        if bounded and len(touched) > HISTORY_FULL_SYNC_THRESHOLD:
            raise HistoryTooLong(f"{len(touched)} messages changed since {start}")
        stored = self._stored({store_id(gid) for gid in touched})
        as_of = timezone.now()
        self._fetch_new(sorted(gid for gid in touched if store_id(gid) not in stored))
        known = sorted(gid for gid in touched if store_id(gid) in stored)
        current = self.client.get_messages(known, fmt="minimal") if known else None
        if current is not None:
            self.gone |= current.gone
            self._labels_set(
                {gid: m.get("labelIds", []) for gid, m in current.found.items()}, as_of
            )
        self.report.deleted += mailbox.messages_remove(
            self.account, {store_id(gid) for gid in deleted | self.gone}
        )
        if latest != start:
            GmailSettings.objects.filter(account=self.account).update(history_id=latest)
            self.settings.history_id = latest

    # Labels ------------------------------------------------------------------------------
    def _sync_labels(self) -> LabelMap:
        self.labels = labels_sync(
            self.account,
            self.client.labels(),
            skip=self.skip,
            include_spam_trash=self.settings.include_spam_trash,
        )
        return self.labels

    def _labels_map(self) -> LabelMap:
        if self.labels is None:
            self.labels = label_map_stored(
                self.account, include_spam_trash=self.settings.include_spam_trash
            )
        return self.labels

    def _labels_set(self, labels_by_id: dict[str, list[str]], as_of: datetime) -> None:
        """Set stored messages' folders and flags to their labels (Gmail ids -> label ids)."""
        label_map = self._labels_map()
        items = sorted(labels_by_id.items())
        for start in range(0, len(items), LABELS_SET_CHUNK):
            chunk = items[start : start + LABELS_SET_CHUNK]
            changed, deleted = mailbox.message_folders_set(
                self.account,
                {store_id(gid): label_map.folders(labels) for gid, labels in chunk},
                flags={store_id(gid): message_flags(labels) for gid, labels in chunk},
                as_of=as_of,
            )
            self.report.label_changes += changed
            self.report.deleted += deleted

    # Fetching ----------------------------------------------------------------------------
    def _stored(self, provider_ids: set[str]) -> set[str]:
        return set(
            Message.objects.filter(
                account=self.account, provider_id__in=sorted(provider_ids)
            ).values_list("provider_id", flat=True)
        )

    def _fetch_new(
        self, gmail_ids: list[str], *, listing: bool = False, settle: bool = True
    ) -> bool:
        """Fetch the messages of GMAIL_IDS not in the store and return once they are stored
        (SETTLE false: once published; a later call with them settles them).
        Messages whose batch was lost (its consumer killed) are fetched again, up to
        REFETCH_ROUNDS times. LISTING (ids in messages.list's order, newest first): messages
        older than the date window are left out, and True returned at the first (new mail a
        history sync names is stored whatever its date, as the IMAP path's new UIDs are)."""
        if settle:
            self._drain()  # what unsettled calls published: stored now, or fetched below
        handled = self._stored({store_id(gid) for gid in gmail_ids})
        handled |= set(self.settings.sync_state.get(DEAD_LETTERS, ()))
        wanted = [gid for gid in gmail_ids if store_id(gid) not in handled]
        if not settle:
            return self._publish(wanted, listing=listing)
        older = False
        for _round in range(REFETCH_ROUNDS + 1):
            try:
                older = self._publish(wanted, listing=listing) or older
            finally:
                outcome = self._drain()
            if not outcome.lost_provider_ids:
                return older
            stored = self._stored(outcome.lost_provider_ids)
            wanted = [gid for gid in wanted if store_id(gid) in outcome.lost_provider_ids]
            wanted = [gid for gid in wanted if store_id(gid) not in stored]
            if not wanted:
                return older
        raise BatchesLost(f"{len(wanted)} messages were fetched but not stored")

    def _drain(self) -> DrainOutcome:
        outcome = self.publisher.drain()
        self.problems += outcome.problems
        self._remember_dead_letters(outcome.dead_letter_provider_ids)
        return outcome

    def _publish(self, gmail_ids: list[str], *, listing: bool) -> bool:
        """Fetch GMAIL_IDS (batches of GMAIL_BATCH_SIZE) and publish them; True at the first
        message older than the window (LISTING). The next batch is fetched, in a thread of its
        own, while this one is converted and published (and while `publish` waits for room):
        the client is only ever used by one thread at a time."""
        label_map = self._labels_map()
        size = self.client.config.batch_size
        chunks = [gmail_ids[start : start + size] for start in range(0, len(gmail_ids), size)]
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="gmail-fetch") as fetcher:
            pending = self._fetch_ahead(fetcher, chunks[0], listing=listing) if chunks else None
            for number, chunk in enumerate(chunks):
                if pending is None:
                    raise BudgetExhausted
                at, result = pending.result()
                if number + 1 < len(chunks):
                    pending = self._fetch_ahead(fetcher, chunks[number + 1], listing=listing)
                self.gone |= result.gone
                older = False
                batch: list[tuple[str, dict[str, Any]]] = []
                for gid in chunk:
                    resource = result.found.get(gid)
                    if resource is None:
                        continue
                    internal = message_internal_date(resource)
                    if listing and self.since and internal is not None and internal < self.since:
                        older = True
                        continue
                    folders = label_map.folders(resource.get("labelIds", []))
                    if folders:
                        item = message_item(
                            resource, folders, include_attachments=self.include_attachments
                        )
                        batch.append((gid, item))
                self._publish_items(batch, at)
                if self.after_batch:
                    self.after_batch()
                if older:
                    return True
        return False

    def _fetch_ahead(
        self, fetcher: ThreadPoolExecutor, ids: list[str], *, listing: bool
    ) -> Future[tuple[datetime, BatchResult]] | None:
        """Start fetching IDS: a Future of (when they were asked for, what came); None when
        the budget is spent (a history sync is bounded by its changes: it always completes)."""
        if listing and self._budget_spent():
            return None
        self.requested += len(ids)

        def fetch() -> tuple[datetime, BatchResult]:
            at = timezone.now()
            return at, self.client.get_messages(ids, fmt="raw")

        return fetcher.submit(fetch)

    def _publish_items(self, batch: list[tuple[str, dict[str, Any]]], at: datetime) -> None:
        """Publish in batches of at most INGEST_BATCH_BYTES of raw mail."""
        part: list[tuple[str, dict[str, Any]]] = []
        part_bytes = 0
        for gid, item in [*batch, ("", {})]:
            size = len(item.get("raw", ""))
            if part and (not item or part_bytes + size > settings.INGEST_BATCH_BYTES):
                self.publisher.publish(
                    [i for _, i in part],
                    fetched_at=at,
                    provider_ids=[store_id(g) for g, _ in part],
                )
                part, part_bytes = [], 0
            if item:
                part.append((gid, item))
                part_bytes += size

    def _budget_spent(self) -> bool:
        if self.max_messages is not None and self.requested >= self.max_messages:
            return True
        return self.deadline is not None and time.monotonic() > self.deadline

    def _save_state(self, full: dict[str, Any] | None, *fields: str) -> None:
        """Store the full sync's checkpoint FULL (None: no full sync under way)."""
        state = {k: v for k, v in self.settings.sync_state.items() if k != FULL}
        if full is not None:
            state[FULL] = full
        self.settings.sync_state = state
        self.settings.save(update_fields=["sync_state", *fields])

    def _remember_dead_letters(self, provider_ids: set[str]) -> None:
        known = set(self.settings.sync_state.get(DEAD_LETTERS, ()))
        if provider_ids - known:
            self.settings.sync_state = {
                **self.settings.sync_state,
                DEAD_LETTERS: sorted(known | provider_ids),
            }
            self.settings.save(update_fields=["sync_state"])
