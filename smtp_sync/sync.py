"""IMAP sync service: decides what changed between the server and the store, and applies it.

The store itself is the checkpoint: a message's (folder, UID) location exists once its batch is
committed, so a sync that dies anywhere resumes by fetching exactly the UIDs still missing.
A folder's UIDNEXT / HIGHESTMODSEQ cursor moves only after everything below it is committed.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from emailplatform import topics
from emailplatform.synclock import SyncLockLost
from emailplatform.tempdirs import process_temp_dir
from messages import mailbox
from messages.account_status import account_mark_error, account_mark_ok
from messages.batches import BatchPublisher, batches_void
from messages.folders import guess_role
from messages.models import Account, Folder, MessageLocation, SyncRun
from messages.services import sync_run_finish, sync_run_start
from messages.sync_tasks import SYNC_INFRA_ERRORS

from .identity import known_locations
from .idle_nudge import idle_refresh_request
from .imap import (
    FetchedMessage,
    FolderStatus,
    ImapAuthError,
    ImapConnection,
    ImapError,
    ImapServer,
)
from .models import ImapSettings
from .pool import pooled_connection
from .prefetch import Prefetcher

logger = logging.getLogger(__name__)

INFRA_ERRORS = SYNC_INFRA_ERRORS

REFETCH_ROUNDS = 2
FLAG_BATCH = 2000
FLAG_RESCAN_LIMIT = 5000  # servers without CONDSTORE: flags re-read for the newest N messages
# A folder's sync_state key: UIDs whose message was dead-lettered, handled (not re-fetched).
DEAD_LETTER_UIDS = "deadLetterUids"


@dataclass
class SyncReport:
    folders: int = 0
    new: int = 0
    flag_changes: int = 0
    removed_locations: int = 0
    removed_folders: int = 0
    deleted_messages: int = 0
    done: bool = True
    folder_errors: dict[str, str] = field(default_factory=dict)
    passes: int = 1  # 0: nothing was owed (a duplicate or stale trigger)

    def add(self, other: SyncReport) -> None:
        self.folders = max(self.folders, other.folders)
        self.new += other.new
        self.flag_changes += other.flag_changes
        self.removed_locations += other.removed_locations
        self.removed_folders += other.removed_folders
        self.deleted_messages += other.deleted_messages
        self.done = other.done
        self.folder_errors.update(other.folder_errors)

    def summary(self) -> str:
        state = "complete" if self.done else "paused at its checkpoint (more to do)"
        return (
            f"{self.folders} folders: {self.new} new messages, {self.flag_changes} flag changes, "
            f"{self.removed_locations} removed from folders, {self.deleted_messages} deleted; "
            f"{state}"
        )


class BudgetExhausted(Exception):
    """This chunk of a long sync used its share; the next chunk resumes from the store."""


def server_for(account: Account, settings: ImapSettings | None = None) -> ImapServer:
    """The account's IMAP server (SETTINGS: its ImapSettings row, when read already)."""
    settings = settings or ImapSettings.objects.get(account=account)
    credentials = account.get_credentials()
    return ImapServer(
        host=settings.imap_host,
        port=settings.imap_port,
        security=settings.imap_security,
        username=settings.username,
        password=credentials.get("password", ""),
        oauth2_token=credentials.get("oauth2_token", ""),
        allow_internal=settings.allow_internal,
    )


class ImapAccountSync:
    """One sync pass of one account over one connection."""

    def __init__(
        self,
        account: Account,
        *,
        connection_factory: Callable[
            [ImapServer], AbstractContextManager[ImapConnection]
        ] = pooled_connection,
        max_messages: int | None = None,
        max_seconds: float | None = None,
        progress: Callable[[int, int], None] | None = None,
        after_batch: Callable[[], None] | None = None,
        options: dict | None = None,
    ) -> None:
        self.account = account
        self.connection_factory = connection_factory
        self.max_messages = max_messages
        self.deadline = time.monotonic() + max_seconds if max_seconds else None
        self.progress = progress
        self.after_batch = after_batch
        self.report = SyncReport()
        self.inbox_status: FolderStatus | None = None
        self.run: SyncRun | None = None
        self.fetched = 0
        self.progress_total = 0
        self.message_problems: list[str] = []
        options = {**(account.sync_settings or {}), **(options or {})}
        self.include_attachments = bool(options.get("includeAttachments", True))
        self.skip_folders = set(options.get("skipFolders", []))
        self.backfill = bool(options.get("backfill", False))
        window = options.get("windowDays")
        self.since: date | None = (
            (datetime.now(UTC) - timedelta(days=int(window))).date() if window else None
        )

    # Entry point -------------------------------------------------------------------------
    def sync(self, *, full: bool = False, continuing: bool = False) -> SyncReport:
        """One pass: FULL re-reads every folder; otherwise what changed, plus every folder not
        yet complete. CONTINUING (the rest of a full pass that paused at its checkpoint) runs
        as an incremental pass but its run is labelled full, as the progress it shows is.
        An incremental pass syncs the INBOX first when it is synced complete, before LIST and
        the other folders: new mail (what IDLE reports) is stored that much sooner."""
        kind = SyncRun.Kind.FULL if full or continuing else SyncRun.Kind.INCREMENTAL
        self.run = sync_run_start(account=self.account, kind=kind)
        self.publisher = BatchPublisher(
            self.account.pk, "imap", sync_run_id=self.run.pk, on_wait=self.after_batch
        )
        try:
            batches_void(self.account.pk, keep_publisher=self.publisher.publisher)
            imap_settings = ImapSettings.objects.get(account=self.account)
            with self.connection_factory(server_for(self.account, imap_settings)) as conn:
                if imap_settings.capabilities != sorted(conn.capabilities):
                    ImapSettings.objects.filter(account=self.account).update(
                        capabilities=sorted(conn.capabilities)
                    )
                    idle_refresh_request()
                inbox = None if full or continuing else self._synced_inbox()
                if inbox is not None:
                    self._sync_folder(conn, inbox, full=False)
                    self.report.folders += 1
                elif not full:
                    self._inbox_status_first(conn)
                folders = self._sync_folders(conn)
                self._set_total(conn, folders, full)
                for folder in folders:
                    if inbox is not None and folder.pk == inbox.pk:
                        continue
                    self._sync_folder(conn, folder, full=full)
                    self.report.folders += 1
                    if self.after_batch:
                        self.after_batch()
        except (BudgetExhausted, SyncLockLost, BatchesLost):
            self.report.done = False
        except ImapAuthError as exc:
            account_mark_error(self.account, str(exc), auth=True)
            sync_run_finish(run=self.run, error=str(exc))
            raise
        except ImapError as exc:
            account_mark_error(self.account, str(exc))
            sync_run_finish(run=self.run, error=str(exc))
            raise
        except INFRA_ERRORS:
            # The database or Redis failed: the run stays "running" and its work is handed on
            # (the task's retry, or the watchdog once the account's lock is gone).
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            account_mark_error(self.account, f"sync failed: {reason}")
            sync_run_finish(run=self.run, error=reason)
            raise
        if self.report.done:
            # The orphan scan reads every message of the account: run it when this pass took
            # messages out of folders, and on full syncs (which also clean up after a crash).
            if full or self.report.removed_locations or self.report.removed_folders:
                self.report.deleted_messages = mailbox.orphans_delete(self.account)
            account_mark_ok(self.account)
            if self.message_problems:
                account_mark_error(self.account, "; ".join(self.message_problems))
        sync_run_finish(run=self.run)
        self.report.new = SyncRun.objects.values_list("created", flat=True).get(pk=self.run.pk)
        return self.report

    # Folders -----------------------------------------------------------------------------
    def _sync_folders(self, conn: ImapConnection) -> list[Folder]:
        server_folders = conn.list_folders()
        by_name: dict[str, Folder] = {}
        for sf in sorted(server_folders, key=lambda f: f.name.count(f.delimiter or "\0")):
            has_parent = sf.delimiter and sf.delimiter in sf.name
            parent_name = sf.name.rsplit(sf.delimiter, 1)[0] if has_parent else None
            by_name[sf.name] = mailbox.folder_upsert(
                self.account,
                name=sf.name,
                delimiter=sf.delimiter,
                role=sf.role or guess_role(sf.name, sf.delimiter),
                parent=by_name.get(parent_name) if parent_name else None,
            )
        self.report.removed_folders += mailbox.folders_remove_missing(self.account, by_name)
        selectable = [
            by_name[sf.name]
            for sf in server_folders
            if sf.selectable and sf.name not in self.skip_folders
        ]
        inbox_first = sorted(selectable, key=lambda f: (f.role != Folder.Role.INBOX, f.name))
        return inbox_first

    def _set_total(self, conn: ImapConnection, folders: list[Folder], full: bool) -> None:
        if not (full or any(not f.sync_state.get("complete") for f in folders)):
            return
        self.progress_total = sum(conn.message_count(folder.name) for folder in folders)
        # Progress counts what is stored, so a full sync's later chunks go on where the
        # earlier ones stopped: the messages of these folders already stored, plus each batch.
        stored = MessageLocation.objects.filter(folder__in=folders, uid__isnull=False).count()
        SyncRun.objects.filter(pk=self.run.pk).update(
            progress_total=self.progress_total, progress_done=F("progress_done") + stored
        )

    def _synced_inbox(self) -> Folder | None:
        """The INBOX, when a pass can sync it before listing the folders: in the store, not
        skipped, synced complete (its STATUS comes before LIST, see `_inbox_status_first`)."""
        inbox = Folder.objects.filter(account=self.account, role=Folder.Role.INBOX).first()
        if inbox is None or inbox.uidvalidity is None or inbox.name in self.skip_folders:
            return None
        inbox.account = self.account
        return inbox if inbox.sync_state.get("complete") else None

    def _sync_folder(self, conn: ImapConnection, folder: Folder, *, full: bool) -> None:
        if not full and self._unchanged(conn, folder):
            return
        status = conn.select(folder.name)
        if folder.uidvalidity is not None and folder.uidvalidity != status.uidvalidity:
            logger.info("UIDVALIDITY of %s changed: re-mapping its messages", folder.name)
            self.report.removed_locations += mailbox.folder_reset(
                folder, uidvalidity=status.uidvalidity
            )
        elif folder.uidvalidity is None:
            folder.uidvalidity = status.uidvalidity
            folder.save(update_fields=["uidvalidity"])

        if full or not folder.sync_state.get("complete"):
            self._reconcile(conn, folder, refresh_flags=full)
        else:
            self._incremental(conn, folder, status)
        folder.uidnext = status.uidnext
        folder.highest_modseq = status.highest_modseq
        folder.sync_state = {**folder.sync_state, "complete": True}
        folder.save(update_fields=["uidnext", "highest_modseq", "sync_state"])

    def _inbox_status_first(self, conn: ImapConnection) -> None:
        """STATUS INBOX before anything else in the session.

        Once LIST has opened Dovecot's mailbox-list index, opening a maildir mailbox makes it
        read the whole dovecot-uidlist (53 bytes a message): STATUS INBOX after LIST measured
        91 ms at 100,000 messages, before LIST 0.7 ms. Other servers: the same one round trip.
        """
        if conn.has("CONDSTORE"):
            self.inbox_status = conn.status("INBOX")

    def _unchanged(self, conn: ImapConnection, folder: Folder) -> bool:
        """With CONDSTORE, STATUS tells a quiet folder without the cost of selecting it."""
        if not folder.sync_state.get("complete") or folder.highest_modseq is None:
            return False
        early = self.inbox_status if folder.role == Folder.Role.INBOX else None
        status = early or conn.status(folder.name)
        return (
            status.uidvalidity == folder.uidvalidity
            and status.uidnext == folder.uidnext
            and status.highest_modseq == folder.highest_modseq
        )

    def _reconcile(self, conn: ImapConnection, folder: Folder, *, refresh_flags: bool) -> None:
        """Make the folder's stored UIDs equal the server's: fetch missing, drop vanished.

        Newest first; with a date window, mail inside it first, and older mail only when the
        account asks for a backfill."""
        server_uids = conn.search_uids()
        stored = mailbox.folder_uids(folder)
        present = set(server_uids)
        gone = stored - present
        if gone:
            self.report.removed_locations += mailbox.locations_remove(folder, gone)
        recent = conn.search_uids(since=self.since) if self.since else server_uids
        wanted = list(reversed(recent))
        if self.since and self.backfill:
            recent_set = set(recent)
            wanted += [uid for uid in reversed(server_uids) if uid not in recent_set]
        self._fetch_and_store(conn, folder, [uid for uid in wanted if uid not in stored])
        if refresh_flags:
            kept = sorted(stored & present)
            for start in range(0, len(kept), FLAG_BATCH):
                flags = conn.fetch_flags(kept[start : start + FLAG_BATCH])
                self.report.flag_changes += mailbox.flags_apply(folder, flags)

    def _incremental(self, conn: ImapConnection, folder: Folder, status) -> None:
        condstore = status.highest_modseq is not None and folder.highest_modseq is not None
        unchanged_uids = status.uidnext == folder.uidnext
        if condstore and unchanged_uids and status.highest_modseq == folder.highest_modseq:
            return
        if unchanged_uids and not condstore:
            stored_count = len(mailbox.folder_uids(folder))
            if stored_count == status.exists:
                self._rescan_flags(conn, folder)
                return
        if not unchanged_uids and folder.uidnext:
            stored = mailbox.folder_uids(folder, min_uid=folder.uidnext)
            new = [u for u in conn.search_uids(min_uid=folder.uidnext) if u not in stored]
            self._fetch_and_store(conn, folder, new)
        if condstore:
            changes = conn.changes_since(folder.highest_modseq)
            self.report.flag_changes += mailbox.flags_apply(folder, changes.flags)
            if conn.has("QRESYNC"):
                self.report.removed_locations += mailbox.locations_remove(folder, changes.vanished)
                return
        else:
            self._rescan_flags(conn, folder)
        stored = mailbox.folder_uids(folder)
        if len(stored) != status.exists:
            gone = stored - set(conn.search_uids())
            self.report.removed_locations += mailbox.locations_remove(folder, gone)

    def _rescan_flags(self, conn: ImapConnection, folder: Folder) -> None:
        newest = sorted(mailbox.folder_uids(folder))[-FLAG_RESCAN_LIMIT:]
        for start in range(0, len(newest), FLAG_BATCH):
            flags = conn.fetch_flags(newest[start : start + FLAG_BATCH])
            self.report.flag_changes += mailbox.flags_apply(folder, flags)

    # Fetching ----------------------------------------------------------------------------
    def _fetch_and_store(self, conn: ImapConnection, folder: Folder, uids: Sequence[int]) -> None:
        """Fetch UIDS and publish them to the message service; return once they are stored.

        Batches are fetched one ahead, in a thread, while the last is published (or, inline,
        stored); the publisher bounds how many are in flight. A message that cannot be stored
        does not stop the folder (see messages.ingest): its UID, dead-lettered, is remembered
        in the folder's sync_state and not fetched again. UIDs whose batch was lost (its
        consumer killed) are fetched again, up to REFETCH_ROUNDS times; after that the pass
        ends unfinished and the folder's cursor stays where it was."""
        sizes: dict[int, int] = {}
        uids = known_locations(conn, folder, uids, sizes)
        handled = set(folder.sync_state.get(DEAD_LETTER_UIDS, ()))
        uids = [uid for uid in uids if uid not in handled]
        for _round in range(REFETCH_ROUNDS + 1):
            try:
                self._publish(conn, folder, uids, sizes)
            finally:
                lost = self._drain(folder)
            if not lost:
                return
            stored = mailbox.folder_uids(folder)
            uids = sorted((lost - stored), reverse=True)
            if not uids:
                return
        raise BatchesLost(f"{folder.name}: {len(uids)} messages were fetched but not stored")

    def _publish(
        self, conn: ImapConnection, folder: Folder, uids: Sequence[int], sizes: dict[int, int]
    ) -> None:
        batches = Prefetcher(self._fetched_batches(conn, folder, uids, sizes), discard=_discard)
        with batches:
            for fetched in batches:
                try:
                    self._check_budget()
                    self.publisher.publish(
                        fetched.items, fetched_at=fetched.at, folder=folder, uids=fetched.uids
                    )
                except BaseException:
                    _discard(fetched)
                    raise
                self.fetched += fetched.asked
                if self.progress:
                    self.progress(self.fetched, self.progress_total)
                if self.after_batch:
                    self.after_batch()

    def _drain(self, folder: Folder) -> set[int]:
        """Wait for what was published; remember dead letters; return the UIDs lost."""
        outcome = self.publisher.drain()
        dead = outcome.dead_letter_uids.get(folder.pk)
        if dead:
            known = set(folder.sync_state.get(DEAD_LETTER_UIDS, ()))
            folder.sync_state = {**folder.sync_state, DEAD_LETTER_UIDS: sorted(known | dead)}
            Folder.objects.filter(pk=folder.pk).update(sync_state=folder.sync_state)
        for problem in outcome.problems:
            self.message_problems.append(f"{folder.name}: {problem}")
        return outcome.lost.get(folder.pk, set())

    def _fetched_batches(
        self, conn: ImapConnection, folder: Folder, uids: Sequence[int], sizes: dict[int, int]
    ) -> Iterator[FetchedBatch]:
        """Batches as payload items. Runs in the prefetch thread: IMAP and files only, no
        database (a large message is fetched to a file and staged in blob storage)."""
        for uids_batch, large in self._batches(conn, uids, sizes):
            at = timezone.now()
            if large:
                with tempfile.TemporaryDirectory(prefix="imap-", dir=process_temp_dir()) as tmp:
                    one = conn.fetch_message_to_file(uids_batch[0], Path(tmp) / "raw.eml")
                    fetched = [one] if one else []
                    items = [self._item(folder, m) for m in fetched if m.raw_file is not None]
            else:
                fetched = conn.fetch_messages(uids_batch, include_body=True)
                items = self._items(folder, [m for m in fetched if m.raw is not None])
            yield FetchedBatch(
                asked=len(uids_batch),
                uids=[m.uid for m in fetched if m.raw is not None or m.raw_file is not None],
                items=items,
                at=at,
            )

    def _batches(
        self, conn: ImapConnection, uids: Sequence[int], known_sizes: dict[int, int]
    ) -> Iterator[tuple[list[int], bool]]:
        """Batches bounded in count and, using RFC822.SIZE (asked for unless KNOWN_SIZES has
        it), in bytes; a large message goes alone, flagged to be fetched into a file rather
        than into memory."""
        count = settings.IMAP_FETCH_BATCH
        for start in range(0, len(uids), count):
            chunk = list(uids[start : start + count])
            sizes = {uid: known_sizes[uid] for uid in chunk if uid in known_sizes}
            missing = [uid for uid in chunk if uid not in sizes]
            if missing:
                fetched = conn.fetch_messages(missing, include_body=False)
                sizes.update((m.uid, m.size) for m in fetched)
            batch: list[int] = []
            batch_bytes = 0
            for uid in chunk:
                size = sizes.get(uid, 0)
                if size > settings.LARGE_MESSAGE_BYTES:
                    yield [uid], True
                    continue
                if batch and batch_bytes + size > settings.INGEST_BATCH_BYTES:
                    yield batch, False
                    batch, batch_bytes = [], 0
                batch.append(uid)
                batch_bytes += size
            if batch:
                yield batch, False

    def _check_budget(self) -> None:
        if self.max_messages is not None and self.fetched >= self.max_messages:
            raise BudgetExhausted
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise BudgetExhausted

    def _item(self, folder: Folder, message: FetchedMessage) -> dict:
        return fetched_item(
            message, folder.name, uid=message.uid, include_attachments=self.include_attachments
        )

    def _items(self, folder: Folder, messages: list[FetchedMessage]) -> list[dict]:
        """The items of MESSAGES fetched into memory: staged as one blob when their batch goes
        to the queue (see `topics.new_message_items_staged`)."""
        raws = [m.raw or b"" for m in messages]
        if not messages or not self.publisher.queues(len(raws), sum(map(len, raws))):
            return [self._item(folder, m) for m in messages]
        fields = [
            fetched_item_fields(
                m, folder.name, uid=m.uid, include_attachments=self.include_attachments
            )
            for m in messages
        ]
        return topics.new_message_items_staged(raws, fields)


def fetched_item(
    message: FetchedMessage, folder_name: str, *, uid: int | None, include_attachments: bool = True
) -> dict:
    """The pipeline item of a message fetched from FOLDER_NAME."""
    fields = fetched_item_fields(
        message, folder_name, uid=uid, include_attachments=include_attachments
    )
    return topics.new_message_item(message.raw or b"", raw_file=message.raw_file, **fields)


def fetched_item_fields(
    message: FetchedMessage, folder_name: str, *, uid: int | None, include_attachments: bool = True
) -> dict[str, Any]:
    """`topics.new_message_item`'s arguments for a message fetched from FOLDER_NAME, but its
    raw bytes (imapclient gives the internal date as naive local time: it travels as UTC with
    its offset)."""
    internal = message.internal_date
    if internal is not None:
        internal = internal.astimezone(UTC)
    return {
        "provider_id": f"gm:{message.gm_msgid}" if message.gm_msgid else None,
        "thread_id": f"gm:{message.gm_thrid}" if message.gm_thrid else None,
        "server_id": message.server_id,
        "folder": folder_name,
        "uid": uid,
        "flags": list(message.flags),
        "internal_date": internal.isoformat() if internal else None,
        "include_attachments": include_attachments,
    }


@dataclass
class FetchedBatch:
    asked: int  # UIDs asked for (some may have vanished meanwhile)
    uids: list[int]  # UIDs the server returned
    items: list[dict]  # EmailNewMessage payload items
    at: datetime  # when the fetch began: the flags are at least this fresh


class BatchesLost(Exception):
    """Batches were fetched again and again lost: the pass ends unfinished."""


def _discard(fetched: FetchedBatch) -> None:
    """A batch fetched but never published: its staged blobs go."""
    topics.delete_staged(item["rawRef"] for item in fetched.items if "rawRef" in item)
