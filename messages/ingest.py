"""The EmailNewMessage service: upsert a batch of raw messages, idempotently.

Every write is keyed (account + provider id; message + folder; folder + UID), and the whole
batch is one transaction under a per-account lock, so a redelivered or overlapping batch
changes nothing that is already there and never creates a second row.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection, transaction

from emailplatform.tempdirs import process_temp_dir
from emailplatform.topics import IncomingMessage

from .events import events_record, messages_updated
from .folders import folders_by_name
from .mime import ParsedAttachment, ParsedMessage
from .mime_stream import parse_message_bytes, parse_message_file
from .models import Account, Attachment, Message, MessageLocation, RawMessage
from .threader import ThreadAssignment, ThreadInput, assign_threads, refresh_thread_summaries

# pg_advisory_xact_lock(namespace, account id): serializes ingestion per account.
INGEST_LOCK_NAMESPACE = 7201

FLAG_FIELDS = {
    "\\seen": "is_read",
    "\\flagged": "is_flagged",
    "\\answered": "is_answered",
    "\\draft": "is_draft",
}


@dataclass
class IngestResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    damaged: int = 0
    message_ids: list[int] = field(default_factory=list)


@dataclass
class _Prepared:
    item: IncomingMessage
    compressed_raw: bytes | None  # None: a big message, kept in item.raw_file, never whole
    parsed: ParsedMessage
    provider_id: str
    sort_date: datetime
    internal_date: datetime | None


def derive_provider_id(parsed: ParsedMessage) -> str:
    """Identity of a message the provider gives no id for: its exact bytes.

    An IMAP move or copy keeps the bytes, so the copy in a second folder is the same message;
    two different messages that share a Message-ID (it happens) stay two messages.
    """
    return f"sha256:{parsed.sha256}"


def flag_values(flags: Sequence[str]) -> dict[str, bool]:
    lowered = {flag.lower() for flag in flags}
    return {fname: flag in lowered for flag, fname in FLAG_FIELDS.items()}


class PreparedBatch:
    """A batch parsed and its attachment files stored: all of an upsert but the database.

    Preparing touches neither the database nor the account, so a sync can prepare the next
    batch in another thread while this one is written. Close it (or use `with`) to remove its
    temporary files."""

    def __init__(self, items: Sequence[IncomingMessage]) -> None:
        self._work_dir = tempfile.TemporaryDirectory(prefix="ingest-", dir=process_temp_dir())
        self.work_dir = Path(self._work_dir.name)
        try:
            self.prepared = _prepare(items, self.work_dir)
            self.stored_files = _store_attachment_files(self.prepared)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> PreparedBatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._work_dir.cleanup()


def messages_upsert(*, account: Account, items: Sequence[IncomingMessage]) -> IngestResult:
    """Store a batch of raw messages with their provider metadata."""
    with PreparedBatch(items) as batch:
        return messages_write(account=account, batch=batch)


def messages_write(*, account: Account, batch: PreparedBatch) -> IngestResult:
    """The database half of `messages_upsert`, for a batch prepared beforehand."""
    prepared, stored_files, work_dir = batch.prepared, batch.stored_files, batch.work_dir
    result = IngestResult()
    written: list[str] = []  # raw files of this batch: removed if it rolls back
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_advisory_xact_lock(%s, %s)", [INGEST_LOCK_NAMESPACE, account.pk]
                )
            folder_names = {name for p in prepared for name in p.item.folders}
            folders = folders_by_name(account, folder_names)
            existing = {
                m.provider_id: m
                for m in Message.objects.filter(
                    account=account, provider_id__in={p.provider_id for p in prepared}
                ).only("id", "provider_id", "sort_date", *FLAG_FIELDS.values())
            }
            new_by_id: dict[str, _Prepared] = {}
            for p in prepared:
                if p.provider_id not in existing and p.provider_id not in new_by_id:
                    new_by_id[p.provider_id] = p
            raw_files = _store_raw_files(account, list(new_by_id.values()), work_dir, written)
            created, threads = _create_messages(
                account, list(new_by_id.values()), stored_files, raw_files
            )
            result.created = len(created)
            _analyze_when_grown(len(created))
            result.damaged = sum(1 for p in new_by_id.values() if p.parsed.defects)

            changed_ids = _update_flags(existing, prepared)
            all_messages = {**existing, **created}
            changed_ids |= _upsert_locations(all_messages, prepared, folders)
            result.updated = len(changed_ids - {m.id for m in created.values()})
            result.unchanged = len(existing) - result.updated
            result.message_ids = sorted(m.id for m in all_messages.values())
            created_ids = {m.id for m in created.values()}
            events_record(account, "message", "created", created_ids)
            if threads is not None:
                touched = set(threads.thread_ids)
                events_record(account, "thread", "created", threads.created)
                events_record(account, "thread", "updated", touched - threads.created)
                events_record(account, "thread", "deleted", threads.merged_away)
            messages_updated(account, changed_ids - created_ids)
    except BaseException:
        for name in written:
            default_storage.delete(name)
        raise
    return result


# ANALYZE after bulk loads: a first sync into young tables runs on statistics that say they
# are empty until autovacuum's next look (a minute), and the planner then scans where it should
# probe an index: a 10,000-message full sync took 33 s instead of 20 (one DELETE grew with the
# table). So each process analyzes the tables itself when its own inserts have grown them:
# after 1,000 new messages, then 4,000, 16,000... (autovacuum keeps them current after that).
_ANALYZED_TABLES = (
    "mailstore_message",
    "mailstore_messagelocation",
    "mailstore_rawmessage",
    "mailstore_thread",
    "mailstore_threadreference",
    "mailstore_attachment",
)
_growth = {"inserted": 0, "next_analyze": 1000}


def _analyze_when_grown(created: int) -> None:
    _growth["inserted"] += created
    if _growth["inserted"] < _growth["next_analyze"]:
        return
    _growth["next_analyze"] = _growth["inserted"] * 4

    def analyze() -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {', '.join(_ANALYZED_TABLES)}")

    transaction.on_commit(analyze)


def _prepare(items: Sequence[IncomingMessage], spill_dir: Path) -> list[_Prepared]:
    now = datetime.now(UTC)
    prepared = []
    for item in items:
        raw, parsed = _parse(item, spill_dir)
        internal_date = _parse_iso(item.internal_date)
        if item.internal_date and internal_date is None:
            parsed.defects.append(f"provider internalDate unreadable: {item.internal_date!r}")
        prepared.append(
            _Prepared(
                item=item,
                compressed_raw=RawMessage.compress(raw) if raw is not None else None,
                parsed=parsed,
                provider_id=item.provider_id or derive_provider_id(parsed),
                sort_date=internal_date or parsed.date or now,
                internal_date=internal_date,
            )
        )
    return prepared


def _parse(item: IncomingMessage, spill_dir: Path) -> tuple[bytes | None, ParsedMessage]:
    if not item.raw_file:
        return item.raw, parse_message_bytes(item.raw)
    path = Path(item.raw_file)
    if path.stat().st_size > settings.LARGE_MESSAGE_BYTES:
        return None, parse_message_file(path, spill_dir=spill_dir)
    raw = path.read_bytes()
    return raw, parse_message_bytes(raw)


def _parse_iso(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _store_attachment_files(prepared: list[_Prepared]) -> dict[str, str]:
    """Content-addressed files, written before the transaction (an orphan is harmless)."""
    names: dict[str, str] = {}
    for p in prepared:
        if not p.item.include_attachments:
            continue
        for attachment in p.parsed.attachments:
            if attachment.sha256 in names:
                continue
            names[attachment.sha256] = attachment_file_store(attachment)
    return names


def attachment_file_store(attachment: ParsedAttachment) -> str:
    """Store a part's content under its sha256 (once) and return the storage name."""
    name = f"attachments/{attachment.sha256[:2]}/{attachment.sha256}"
    if default_storage.exists(name):
        return name
    with attachment.open() as content:
        return default_storage.save(name, File(content))


def _store_raw_files(
    account: Account, new: list[_Prepared], work_dir: Path, written: list[str]
) -> dict[str, tuple[str, int, int | None]]:
    """Write the new messages' compressed raw bytes to the media storage, durably, before
    their rows commit: {provider id: (file, offset, length)}. The batch shares one segment
    file; a big message, compressed as it streams from its file, gets its own."""
    places: dict[str, tuple[str, int, int | None]] = {}
    directory = f"raw/{account.pk}/{datetime.now(UTC):%Y%m}"
    small = [p for p in new if p.compressed_raw is not None]
    if small:
        name = _save_durably(
            f"{directory}/{uuid.uuid4()}.zs",
            ContentFile(b"".join(p.compressed_raw for p in small)),
        )
        written.append(name)
        offset = 0
        for p in small:
            places[p.provider_id] = (name, offset, len(p.compressed_raw))
            offset += len(p.compressed_raw)
    for p in new:
        if p.compressed_raw is None:
            compressed = work_dir / f"{p.parsed.sha256}.zst"
            RawMessage.compress_file(Path(p.item.raw_file), compressed)
            with compressed.open("rb") as content:
                name = _save_durably(f"{directory}/{uuid.uuid4()}.zst", File(content))
            written.append(name)
            compressed.unlink()
            places[p.provider_id] = (name, 0, None)
    return places


def _save_durably(name: str, content: File) -> str:
    name = default_storage.save(name, content)
    try:
        path = default_storage.path(name)
    except NotImplementedError:  # a remote storage: durable once the upload returns
        return name
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return name


def _create_messages(
    account: Account,
    new: list[_Prepared],
    stored_files: dict[str, str],
    raw_files: dict[str, tuple[str, int, int | None]],
) -> tuple[dict[str, Message], ThreadAssignment | None]:
    if not new:
        return {}, None
    threads = assign_threads(
        account,
        [
            ThreadInput(
                own_id=p.parsed.message_id or f"<{p.provider_id}@no-message-id>",
                referenced_ids=_referenced_ids(p.parsed),
                provider_thread_id=p.item.provider_thread_id,
            )
            for p in new
        ],
    )
    rows = [
        _message_row(account, p, thread_id)
        for p, thread_id in zip(new, threads.thread_ids, strict=True)
    ]
    Message.objects.bulk_create(rows, batch_size=1000)
    RawMessage.objects.bulk_create(
        [
            RawMessage(
                message=row,
                file=raw_files[p.provider_id][0],
                offset=raw_files[p.provider_id][1],
                length=raw_files[p.provider_id][2],
                size=p.parsed.size,
                sha256=p.parsed.sha256,
            )
            for p, row in zip(new, rows, strict=True)
        ],
        batch_size=500,
    )
    Attachment.objects.bulk_create(
        [
            _attachment_row(row, attachment, stored_files)
            for p, row in zip(new, rows, strict=True)
            for attachment in p.parsed.attachments
        ],
        batch_size=1000,
    )
    refresh_thread_summaries(set(threads.thread_ids))
    return {row.provider_id: row for row in rows}, threads


def _referenced_ids(parsed: ParsedMessage) -> list[str]:
    refs = list(parsed.references)
    if parsed.in_reply_to and parsed.in_reply_to not in refs:
        refs.append(parsed.in_reply_to)
    return [ref for ref in refs if ref != parsed.message_id]


def _message_row(account: Account, p: _Prepared, thread_id: int) -> Message:
    parsed = p.parsed
    flags = flag_values(p.item.flags or [])
    return Message(
        account=account,
        thread_id=thread_id,
        provider_id=p.provider_id,
        message_id_header=parsed.message_id[:998],
        in_reply_to=parsed.in_reply_to[:998],
        references=parsed.references,
        subject=parsed.subject,
        from_name=parsed.from_name[:998],
        from_address=parsed.from_address[:998],
        to=parsed.to,
        cc=parsed.cc,
        bcc=parsed.bcc,
        reply_to=parsed.reply_to,
        date=parsed.date,
        internal_date=p.internal_date,
        sort_date=p.sort_date,
        snippet=parsed.snippet,
        body_text=parsed.body_text,
        body_html=parsed.body_html,
        size=parsed.size,
        has_attachments=any(not a.is_inline for a in parsed.attachments),
        defects=parsed.defects,
        **flags,
    )


def _attachment_row(
    message: Message, attachment: ParsedAttachment, stored_files: dict[str, str]
) -> Attachment:
    return Attachment(
        message=message,
        part_path=attachment.part_path,
        filename=attachment.filename[:1024],
        content_type=attachment.content_type[:255],
        size=attachment.size,
        content_id=attachment.content_id[:998],
        is_inline=attachment.is_inline,
        sha256=attachment.sha256,
        file=stored_files.get(attachment.sha256, ""),
    )


def _update_flags(existing: dict[str, Message], prepared: list[_Prepared]) -> set[int]:
    """Apply the provider's current flags to messages already stored; return changed ids."""
    changed: dict[int, Message] = {}
    for p in prepared:
        message = existing.get(p.provider_id)
        if message is None or p.item.flags is None:
            continue
        for fname, value in flag_values(p.item.flags).items():
            if getattr(message, fname) != value:
                setattr(message, fname, value)
                changed[message.id] = message
    if changed:
        Message.objects.bulk_update(list(changed.values()), list(FLAG_FIELDS.values()))
    return set(changed)


def _upsert_locations(
    messages: dict[str, Message], prepared: list[_Prepared], folders: dict
) -> set[int]:
    """Add each message to the folders named for it, at its UID; return changed message ids.

    A folder may hold two identical copies (two UIDs, one message): locations are keyed by
    (folder, UID), or by (message, folder) where there is no UID.
    """
    wanted: set[tuple[int, int, int | None]] = set()
    for p in prepared:
        message = messages[p.provider_id]
        for name in p.item.folders:
            wanted.add((message.id, folders[name].id, p.item.uid))
    if not wanted:
        return set()
    message_ids = {m for m, _, _ in wanted}
    current: dict[tuple[int, int], dict[int | None, MessageLocation]] = {}
    for loc in MessageLocation.objects.filter(message_id__in=message_ids):
        current.setdefault((loc.message_id, loc.folder_id), {})[loc.uid] = loc
    sort_dates = {m.id: m.sort_date for m in messages.values()}
    changed: set[int] = set()
    to_create, to_update = [], []
    for message_id, folder_id, uid in sorted(wanted, key=lambda w: (w[0], w[1], w[2] or 0)):
        held = current.setdefault((message_id, folder_id), {})
        if uid in held or (uid is None and held):
            continue
        if uid is not None and None in held:
            location = held.pop(None)
            location.uid = uid
            to_update.append(location)
        else:
            location = MessageLocation(
                message_id=message_id,
                folder_id=folder_id,
                uid=uid,
                sort_date=sort_dates[message_id],
            )
            to_create.append(location)
        held[uid] = location
        changed.add(message_id)
    uid_claims = [(loc.folder_id, loc.uid) for loc in (*to_create, *to_update) if loc.uid]
    if uid_claims:
        _release_stale_uids(uid_claims, message_ids)
    if to_update:
        MessageLocation.objects.bulk_update(to_update, ["uid"])
    MessageLocation.objects.bulk_create(to_create, batch_size=1000)
    return changed


def _release_stale_uids(claims: list[tuple[int, int]], message_ids: set[int]) -> None:
    """A (folder, UID) now names another message: the old holder's location there is gone."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            DELETE FROM mailstore_messagelocation l
             USING unnest(%s::bigint[], %s::bigint[]) AS c(folder_id, uid)
             WHERE l.folder_id = c.folder_id AND l.uid = c.uid
               AND NOT (l.message_id = ANY(%s))
            """,
            [[f for f, _ in claims], [u for _, u in claims], sorted(message_ids)],
        )
