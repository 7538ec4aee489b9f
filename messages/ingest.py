"""The EmailNewMessage service: upsert a batch of raw messages, idempotently.

Every write is keyed (account + provider id; message + folder; folder + UID), and the whole
batch is one transaction under a per-account lock, so a redelivered or overlapping batch
changes nothing that is already there and never creates a second row.

One message never stops an account: a batch whose write fails for a reason other than the
infrastructure (`INFRA_ERRORS`) is split in halves, each written in its own savepoint, until
the failing message is alone; it is then stored as damaged (raw bytes, headers and body, no
threading and no attachment rows), or dead-lettered with its reason when even that fails.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.transaction import TransactionManagementError
from django.utils import timezone
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from emailplatform import topics
from emailplatform.object_storage import OBJECT_STORE_ERRORS, map_stored, save_confirmed
from emailplatform.observability import metrics
from emailplatform.tempdirs import process_temp_dir
from emailplatform.topics import IncomingMessage

from .bulk_insert import bulk_insert
from .delivery_reports import SCAN_MAX_BYTES, ParsedReport, report_candidate, report_parse
from .events import events_record, events_record_many, messages_updated_events
from .folders import folders_by_name
from .held_writes import hold, writes_held
from .mime import ParsedAttachment, ParsedMessage, conversion_failed
from .mime_stream import file_conversion_failed, parse_message_bytes, parse_message_file
from .models import Account, Attachment, Folder, Message, MessageLocation, RawMessage, Thread
from .report_matching import delivery_reports_record
from .threader import ThreadAssignment, ThreadInput, assign_threads, refresh_thread_summaries

logger = logging.getLogger(__name__)

# Not one message's fault: they propagate (the task or sync is retried), never split a batch.
# OSError covers the media storage (disk full, network); OBJECT_STORE_ERRORS the S3 one.
INFRA_ERRORS: tuple[type[BaseException], ...] = (
    *OBJECT_STORE_ERRORS,
    OperationalError,
    InterfaceError,
    TransactionManagementError,
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    SoftTimeLimitExceeded,
)
# A dead letter keeps the raw message (base64) when it is at most this big.
DEAD_LETTER_RAW_BYTES = 128 * 1024

# pg_advisory_xact_lock(namespace, account id): serializes ingestion per account.
INGEST_LOCK_NAMESPACE = 7201

FLAG_FIELDS = {
    "\\seen": "is_read",
    "\\flagged": "is_flagged",
    "\\answered": "is_answered",
    "\\draft": "is_draft",
}


@dataclass
class DeadLettered:
    item: IncomingMessage
    letter_id: int
    reason: str


@dataclass
class IngestResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    damaged: int = 0
    message_ids: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # messages stored as damaged, and why
    dead_letters: list[DeadLettered] = field(default_factory=list)

    def add(self, other: IngestResult) -> None:
        self.created += other.created
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.damaged += other.damaged
        self.message_ids = sorted({*self.message_ids, *other.message_ids})
        self.problems += other.problems
        self.dead_letters += other.dead_letters

    def problems_text(self) -> str:
        """What went wrong with single messages, for the account's last_error ("" if nothing)."""
        parts = []
        if self.dead_letters:
            count = len(self.dead_letters)
            ids = ", ".join(f"#{d.letter_id}" for d in self.dead_letters)
            parts.append(
                f"{_messages(count)} could not be stored: {self.dead_letters[0].reason} "
                f"(dead letter{'s' if count > 1 else ''} {ids})"
            )
        if self.problems:
            more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
            parts.append(
                f"{_messages(len(self.problems))} stored as damaged: {self.problems[0]}{more}"
            )
        return "; ".join(parts)


def _messages(count: int) -> str:
    return f"{count} message{'s' if count != 1 else ''}"


@dataclass
class _Prepared:
    item: IncomingMessage
    compressed_raw: bytes | None  # None: a big message, kept in item.raw_file, never whole
    parsed: ParsedMessage
    provider_id: str
    sort_date: datetime
    internal_date: datetime | None
    problem: str = ""  # why it is stored as damaged (conversion or attachment files failed)
    server_ids: list[str] = field(default_factory=list)  # of every item with this provider id
    report: ParsedReport | None = None  # a DSN or bounce, recorded when the message is created


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
        self.known_folders: dict[str, Folder] = {}
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


def messages_upsert(
    *, account: Account, items: Sequence[IncomingMessage], isolate: bool = True
) -> IngestResult:
    """Store a batch of raw messages with their provider metadata (see `messages_write`)."""
    with PreparedBatch(items) as batch:
        return messages_write(account=account, batch=batch, isolate=isolate)


def messages_write(
    *,
    account: Account,
    batch: PreparedBatch,
    isolate: bool = True,
    flags_as_of: datetime | None = None,
    known_folders: Sequence[Folder] = (),
) -> IngestResult:
    """The database half of `messages_upsert`, for a batch prepared beforehand.

    With ISOLATE, a message that cannot be written does not fail the batch (see the module's
    docstring) and the account's last_error says what happened to it; INFRA_ERRORS still
    propagate. Without, the batch is one transaction that succeeds or raises.
    FLAGS_AS_OF: when the batch's flags were read from the provider; a stored message whose
    flags were read or changed later (Message.flags_at) keeps them. None: now.
    KNOWN_FOLDERS: folders of the account the caller has read already (not read again)."""
    as_of = flags_as_of or timezone.now()
    batch.known_folders = {f.name: f for f in known_folders if f.account_id == account.pk}
    if not isolate:
        result = _write(account, batch.prepared, batch, as_of=as_of)
    else:
        result = _write_isolating(account, batch.prepared, batch, as_of)
        if result.problems or result.dead_letters:
            account_note_message_problems(account, result.problems_text())
    _measure_on_commit(account.provider, result)
    return result


def _measure_on_commit(provider: str, result: IngestResult) -> None:
    created, damaged = result.created, result.damaged
    if created or damaged:
        transaction.on_commit(
            lambda: metrics.messages_ingested(provider=provider, created=created, damaged=damaged)
        )


def account_note_message_problems(account: Account, text: str) -> None:
    with transaction.atomic():
        Account.objects.filter(pk=account.pk).update(
            last_error=text[:2000], last_error_at=timezone.now()
        )
        events_record(account, "account", "updated", [account.pk])


def _write_isolating(
    account: Account, prepared: list[_Prepared], batch: PreparedBatch, as_of: datetime
) -> IngestResult:
    try:
        return _write(account, prepared, batch, as_of=as_of)
    except INFRA_ERRORS:
        raise
    except Exception as exc:
        if len(prepared) == 1:
            return _write_damaged(account, prepared[0], batch, exc, as_of)
        logger.warning(
            "account %s: a batch of %d failed (%s: %s); splitting it",
            account.pk,
            len(prepared),
            type(exc).__name__,
            exc,
        )
    middle = len(prepared) // 2
    result = _write_isolating(account, prepared[:middle], batch, as_of)
    result.add(_write_isolating(account, prepared[middle:], batch, as_of))
    return result


def _write_damaged(
    account: Account, p: _Prepared, batch: PreparedBatch, exc: Exception, as_of: datetime
) -> IngestResult:
    """The message alone failed: store it without threading or attachment rows, else
    dead-letter it."""
    reason = f"{type(exc).__name__}: {exc}"[:500]
    logger.warning(
        "account %s: message %s failed (%s)", account.pk, p.provider_id, reason, exc_info=exc
    )
    defect = f"could not be stored in full ({reason}); stored without threading or attachments"
    p.parsed.defects.append(defect)
    problem, p.problem = p.problem, reason
    try:
        return _write(account, [p], batch, as_of=as_of, minimal=True)
    except INFRA_ERRORS:
        raise
    except Exception as minimal_exc:
        p.parsed.defects.remove(defect)
        p.problem = problem
        minimal = f"{type(minimal_exc).__name__}: {minimal_exc}"[:500]
        return _dead_letter(
            account, p, reason if minimal == reason else f"{reason}; then {minimal}"
        )


def _dead_letter(account: Account, p: _Prepared, reason: str) -> IngestResult:
    from .services import dead_letter_record  # services imports this module

    payload: dict = {
        "accountId": account.pk,
        "providerId": p.provider_id,
        "folders": p.item.folders,
        "uid": p.item.uid,
        "size": p.parsed.size,
        "sha256": p.parsed.sha256,
        "messageId": p.parsed.message_id,
    }
    if not p.item.raw_file and len(p.item.raw) <= DEAD_LETTER_RAW_BYTES:
        payload["raw"] = base64.b64encode(p.item.raw).decode("ascii")
    letter = dead_letter_record(
        task_name=topics.TASK_INGEST_NEW_MESSAGES,
        reason=f"message could not be stored: {reason}",
        payload=payload,
    )
    logger.error("account %s: message %s dead-lettered (#%s)", account.pk, p.provider_id, letter.pk)
    return IngestResult(dead_letters=[DeadLettered(p.item, letter.pk, reason)])


def _write(
    account: Account,
    prepared: list[_Prepared],
    batch: PreparedBatch,
    *,
    as_of: datetime,
    minimal: bool = False,
) -> IngestResult:
    stored_files, work_dir = batch.stored_files, batch.work_dir
    result = IngestResult()
    written: list[str] = []  # raw files of this batch: removed if it rolls back
    try:
        with transaction.atomic(), writes_held():
            with hold(), connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_advisory_xact_lock(%s, %s)", [INGEST_LOCK_NAMESPACE, account.pk]
                )
            folders = _folders(account, prepared, batch.known_folders)
            existing = {
                m.provider_id: m
                for m in Message.objects.filter(
                    account=account, provider_id__in={p.provider_id for p in prepared}
                ).only(
                    "id",
                    "provider_id",
                    "sort_date",
                    "flags_at",
                    "server_ids",
                    *FLAG_FIELDS.values(),
                )
            }
            server_ids = _server_ids_by_provider_id(prepared)
            new_by_id: dict[str, _Prepared] = {}
            for p in prepared:
                if p.provider_id not in existing and p.provider_id not in new_by_id:
                    new_by_id[p.provider_id] = p
                    p.server_ids = server_ids.get(p.provider_id, [])
            _add_server_ids(existing, server_ids)
            raw_files = _store_raw_files(account, list(new_by_id.values()), work_dir, written)
            created, threads = _create_messages(
                account,
                list(new_by_id.values()),
                stored_files,
                raw_files,
                as_of=as_of,
                minimal=minimal,
            )
            result.created = len(created)
            _analyze_when_grown(len(created))
            result.damaged = sum(1 for p in new_by_id.values() if p.parsed.defects)
            result.problems = [p.problem for p in new_by_id.values() if p.problem]

            changed_ids = _update_flags(existing, prepared, as_of)
            all_messages = {**existing, **created}
            created_ids = {m.id for m in created.values()}
            changed_ids |= _upsert_locations(all_messages, prepared, folders, created_ids)
            result.updated = len(changed_ids - created_ids)
            result.unchanged = len(existing) - result.updated
            result.message_ids = sorted(m.id for m in all_messages.values())
            if not minimal:
                _record_reports(account, list(new_by_id.values()), created)
            events: list[tuple[str, str, set[int]]] = [("message", "created", created_ids)]
            if threads is not None:
                touched = set(threads.thread_ids)
                events += [
                    ("thread", "created", threads.created),
                    ("thread", "updated", touched - threads.created),
                    ("thread", "deleted", threads.merged_away),
                ]
            events += messages_updated_events(changed_ids - created_ids)
            events_record_many(account, events)
    except BaseException:
        for name in written:
            default_storage.delete(name)
        raise
    return result


def _record_reports(account: Account, new: list[_Prepared], created: dict[str, Message]) -> None:
    """Delivery reports among the messages this write creates: recorded once, with them (a
    message met again is not new, so a report synced twice records once)."""
    found = [(created[p.provider_id], p.report) for p in new if p.report is not None]
    if found:
        delivery_reports_record(account, found)


def _folders(
    account: Account, prepared: list[_Prepared], known: dict[str, Folder]
) -> dict[str, Folder]:
    """The folders the batch names, by name: those the caller knows, the others looked up."""
    names = {name for p in prepared for name in p.item.folders}
    found = {name: known[name] for name in names if name in known}
    if names - found.keys():
        found.update(folders_by_name(account, names - found.keys()))
    return found


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
        try:
            raw, parsed = _parse(item, spill_dir)
        except INFRA_ERRORS:
            raise
        except Exception as exc:  # the parsers never raise; this is the last line of defence
            raw, parsed = _parse_failed(item, exc)
        internal_date = _parse_iso(item.internal_date)
        if item.internal_date and internal_date is None:
            parsed.defects.append(f"provider internalDate unreadable: {item.internal_date!r}")
        failed = [d for d in parsed.defects if d.startswith("conversion failed")]
        prepared.append(
            _Prepared(
                item=item,
                compressed_raw=RawMessage.compress(raw) if raw is not None else None,
                parsed=parsed,
                provider_id=item.provider_id or derive_provider_id(parsed),
                sort_date=internal_date or parsed.date or now,
                internal_date=internal_date,
                problem=failed[0] if failed else "",
                report=_report(item, raw, parsed),
            )
        )
    return prepared


def _report(item: IncomingMessage, raw: bytes | None, parsed: ParsedMessage) -> ParsedReport | None:
    """The delivery report the message is, if any; only candidates are read again."""
    tree, parsed.report_tree = parsed.report_tree, None
    if not report_candidate(parsed):
        return None
    if raw is None:
        with Path(item.raw_file).open("rb") as source:
            raw = source.read(SCAN_MAX_BYTES + 1)
    return report_parse(raw, tree)


def _parse_failed(item: IncomingMessage, exc: Exception) -> tuple[bytes | None, ParsedMessage]:
    if not item.raw_file:
        digest = hashlib.sha256(item.raw).hexdigest()
        return item.raw, conversion_failed(item.raw, exc, size=len(item.raw), sha256=digest)
    path = Path(item.raw_file)
    parsed = file_conversion_failed(path, exc)
    return (path.read_bytes() if parsed.size <= settings.LARGE_MESSAGE_BYTES else None), parsed


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
    """Content-addressed files, written before the transaction (an orphan is harmless), each
    once a batch; on an object store several at a time (each is a round trip or two).

    A message whose files cannot be stored (not for an infrastructure reason) is stored
    without them: its attachments are extracted from the raw message when asked for."""
    wanted: dict[str, ParsedAttachment] = {}
    holders: dict[str, list[_Prepared]] = {}
    for p in prepared:
        if not p.item.include_attachments:
            continue
        for attachment in p.parsed.attachments:
            wanted.setdefault(attachment.sha256, attachment)
            held = holders.setdefault(attachment.sha256, [])
            if not held or held[-1] is not p:
                held.append(p)
    outcomes = map_stored(attachment_file_store, list(wanted.values()))
    for outcome in outcomes:
        if isinstance(outcome, INFRA_ERRORS):
            raise outcome
    names: dict[str, str] = {}
    flagged: set[int] = set()  # one defect a message
    for sha256, outcome in zip(wanted, outcomes, strict=True):
        if not isinstance(outcome, BaseException):
            names[sha256] = outcome
            continue
        reason = f"attachment files could not be stored ({type(outcome).__name__}: {outcome})"
        reason = reason[:500]
        for p in holders[sha256]:
            if id(p) in flagged:
                continue
            flagged.add(id(p))
            logger.warning("message %s: %s", p.provider_id, reason, exc_info=outcome)
            p.parsed.defects.append(f"{reason}; kept in the raw message only")
            p.problem = p.problem or reason
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
    if sum(len(p.compressed_raw) for p in small) <= settings.RAW_IN_ROW_MAX_BYTES:
        places.update({p.provider_id: ("", 0, None) for p in small})  # kept in the row
    elif small:
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
    return save_confirmed(name, content)


def _create_messages(
    account: Account,
    new: list[_Prepared],
    stored_files: dict[str, str],
    raw_files: dict[str, tuple[str, int, int | None]],
    *,
    as_of: datetime,
    minimal: bool = False,
) -> tuple[dict[str, Message], ThreadAssignment | None]:
    if not new:
        return {}, None
    if minimal:
        return _create_minimal(account, new, raw_files, as_of)
    threads = assign_threads(
        account,
        [
            ThreadInput(
                own_id=p.parsed.message_id or f"<{p.provider_id}@no-message-id>",
                referenced_ids=_referenced_ids(p.parsed),
                provider_thread_id=p.item.provider_thread_id,
                sort_date=p.sort_date,
                subject=p.parsed.subject,
                snippet=p.parsed.snippet,
            )
            for p in new
        ],
    )
    rows = [
        _message_row(account, p, thread_id, as_of)
        for p, thread_id in zip(new, threads.thread_ids, strict=True)
    ]
    bulk_insert(rows)
    Attachment.objects.bulk_create(
        [
            _attachment_row(row, attachment, stored_files)
            for p, row in zip(new, rows, strict=True)
            for attachment in p.parsed.attachments
        ],
        batch_size=1000,
    )
    with hold():
        RawMessage.objects.bulk_create(
            [_raw_row(row, p, raw_files) for p, row in zip(new, rows, strict=True)],
            batch_size=500,
        )
        refresh_thread_summaries(set(threads.thread_ids) - threads.summarized)
    return {row.provider_id: row for row in rows}, threads


def _create_minimal(
    account: Account,
    new: list[_Prepared],
    raw_files: dict[str, tuple[str, int, int | None]],
    as_of: datetime,
) -> tuple[dict[str, Message], ThreadAssignment]:
    """Messages alone in new threads, without attachment rows: what is left when the full
    write of a message failed."""
    threads = Thread.objects.bulk_create(
        [
            Thread(
                account=account,
                subject=p.parsed.subject,
                snippet=p.parsed.snippet,
                message_count=1,
                last_message_at=p.sort_date,
            )
            for p in new
        ]
    )
    rows = [_message_row(account, p, t.id, as_of) for p, t in zip(new, threads, strict=True)]
    for row in rows:
        row.has_attachments = False
    bulk_insert(rows)
    RawMessage.objects.bulk_create(
        [_raw_row(row, p, raw_files) for p, row in zip(new, rows, strict=True)]
    )
    created = {t.id for t in threads}
    return {row.provider_id: row for row in rows}, ThreadAssignment(list(created), created)


def _raw_row(
    row: Message, p: _Prepared, raw_files: dict[str, tuple[str, int, int | None]]
) -> RawMessage:
    name, offset, length = raw_files[p.provider_id]
    return RawMessage(
        message=row,
        data=p.compressed_raw if not name else b"",
        file=name,
        offset=offset,
        length=length,
        size=p.parsed.size,
        sha256=p.parsed.sha256,
    )


def _referenced_ids(parsed: ParsedMessage) -> list[str]:
    refs = list(parsed.references)
    if parsed.in_reply_to and parsed.in_reply_to not in refs:
        refs.append(parsed.in_reply_to)
    return [ref for ref in refs if ref != parsed.message_id]


def _message_row(account: Account, p: _Prepared, thread_id: int, as_of: datetime) -> Message:
    parsed = p.parsed
    flags = flag_values(p.item.flags or [])
    return Message(
        account=account,
        thread_id=thread_id,
        provider_id=p.provider_id,
        server_ids=p.server_ids,
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
        flags_at=as_of,
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


def _server_ids_by_provider_id(prepared: list[_Prepared]) -> dict[str, list[str]]:
    ids: dict[str, list[str]] = {}
    for p in prepared:
        held = ids.setdefault(p.provider_id, [])
        if p.item.server_id and p.item.server_id not in held:
            held.append(p.item.server_id)
    return ids


def _add_server_ids(existing: dict[str, Message], server_ids: dict[str, list[str]]) -> None:
    """A stored message met under a server id it lacks (an identical copy the server keeps
    apart) keeps that id too: the copy is then re-mapped without a download."""
    grown = []
    for provider_id, message in existing.items():
        missing = [sid for sid in server_ids.get(provider_id, ()) if sid not in message.server_ids]
        if missing:
            message.server_ids = [*message.server_ids, *missing]
            grown.append(message)
    if grown:
        Message.objects.bulk_update(grown, ["server_ids"])


def _update_flags(
    existing: dict[str, Message], prepared: list[_Prepared], as_of: datetime
) -> set[int]:
    """Apply the provider's flags, read at AS_OF, to messages already stored, unless theirs
    were read or changed later; return changed ids."""
    changed: dict[int, Message] = {}
    for p in prepared:
        message = existing.get(p.provider_id)
        if message is None or p.item.flags is None:
            continue
        if message.flags_at is not None and message.flags_at >= as_of:
            continue
        message.flags_at = as_of
        for fname, value in flag_values(p.item.flags).items():
            if getattr(message, fname) != value:
                setattr(message, fname, value)
                changed[message.id] = message
    if changed:
        Message.objects.bulk_update(list(changed.values()), [*FLAG_FIELDS.values(), "flags_at"])
    return set(changed)


def _upsert_locations(
    messages: dict[str, Message], prepared: list[_Prepared], folders: dict, created_ids: set[int]
) -> set[int]:
    """Add each message to the folders named for it, at its UID; return changed message ids.

    A folder may hold two identical copies (two UIDs, one message): locations are keyed by
    (folder, UID), or by (message, folder) where there is no UID. A (folder, UID) that names
    another message now is taken from it (that location is gone). CREATED_IDS: messages
    created in this transaction (they have no locations yet).
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
    if message_ids - created_ids:
        for loc in MessageLocation.objects.filter(message_id__in=message_ids - created_ids):
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
    if to_update:
        _release_stale_uids([(loc.folder_id, loc.uid) for loc in to_update], message_ids)
        MessageLocation.objects.bulk_update(to_update, ["uid"])
    _insert_locations(to_create)
    return changed


def _insert_locations(locations: list[MessageLocation]) -> None:
    """Insert LOCATIONS; one at a (folder, UID) another message holds takes it over (what
    `_release_stale_uids` does, in the same statement)."""
    if not locations:
        return
    with hold(), connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {MessageLocation._meta.db_table} (message_id, folder_id, uid, sort_date)
            SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::timestamptz[])
            ON CONFLICT (folder_id, uid) WHERE uid IS NOT NULL
            DO UPDATE SET message_id = EXCLUDED.message_id, sort_date = EXCLUDED.sort_date
            """,
            [
                [loc.message_id for loc in locations],
                [loc.folder_id for loc in locations],
                [loc.uid for loc in locations],
                [loc.sort_date for loc in locations],
            ],
        )


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
