"""The topic contract: queue names, task names, payload schemas and publish helpers.

Producers and consumers both import this module, so a topic is defined in exactly one place.
Tasks are published by name: the store never imports a sync app, and a provider app never
imports the store's tasks.

Topics (queue; task name; producers):
- EmailNewMessage (email_new_message; messages.ingest_new_messages; sync apps, import_mail)
- EmailFullSync (email_full_sync; <provider>.full_sync; API/admin "sync now", beat)
- provider topics (smtp, gmail; <provider>.*; IDLE listener, push webhook, beat, API: incremental
  sync and message changes)
- account deletion (default; messages.delete_account; API)
- Webhooks (webhooks; webhooks.deliver, webhooks.sweep; change events committed, beat)
"""

from __future__ import annotations

import base64
import functools
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kombu import Exchange, Queue

QUEUE_DEFAULT = "default"
QUEUE_FULL_SYNC = "email_full_sync"
QUEUE_NEW_MESSAGE = "email_new_message"
QUEUE_SMTP = "smtp"
QUEUE_GMAIL = "gmail"
# Webhook deliveries (the webhooks app): a worker of their own, so that a slow or dead
# endpoint never holds a slot a sync needs.
QUEUE_WEBHOOKS = "webhooks"
ALL_QUEUES = (
    QUEUE_DEFAULT,
    QUEUE_FULL_SYNC,
    QUEUE_NEW_MESSAGE,
    QUEUE_SMTP,
    QUEUE_GMAIL,
    QUEUE_WEBHOOKS,
)
# The two kinds of worker process (`make run`, docker-compose.yml): sync workers talk to
# providers and mostly wait (on their servers, and on the message workers: backpressure);
# message workers parse and store, and are CPU-bound.
SYNC_WORKER_QUEUES = (QUEUE_FULL_SYNC, QUEUE_SMTP, QUEUE_GMAIL, QUEUE_DEFAULT)
MESSAGE_WORKER_QUEUES = (QUEUE_NEW_MESSAGE,)
WEBHOOK_WORKER_QUEUES = (QUEUE_WEBHOOKS,)

TASK_INGEST_NEW_MESSAGES = "messages.ingest_new_messages"
TASK_SCHEDULE_FULL_SYNCS = "messages.schedule_full_syncs"
TASK_DELETE_ACCOUNT = "messages.delete_account"

# EmailFullSync: one consumer task per provider. A provider missing here has nothing to sync
# (e.g. "local" accounts filled by `import_mail`).
FULL_SYNC_TASKS: dict[str, str] = {
    "imap": "smtp_sync.full_sync",
    "gmail": "gmail_sync.full_sync",
}

# A client's change to a message (read, flagged, folder), applied on the provider.
MESSAGE_CHANGE_TASKS: dict[str, str] = {
    "imap": "smtp_sync.apply_message_change",
    "gmail": "gmail_sync.apply_message_change",
}

# Sending an outbound message (messages.OutboundMessage), on the provider's queue; its one
# argument is the outbound message's id. A provider missing here cannot send.
OUTBOUND_SEND_TASKS: dict[str, str] = {
    "imap": "smtp_sync.send_outbound",
    "gmail": "gmail_sync.send_outbound",
}

# "Sync now" without a full pass: what changed since the provider's cursor.
INCREMENTAL_SYNC_TASKS: dict[str, str] = {
    "imap": "smtp_sync.incremental_sync",
    "gmail": "gmail_sync.incremental_sync",
}

# Providers whose sync consumers take their work from the per-account requests recorded in
# Redis (emailplatform.syncstate): their triggers coalesce, a dead worker's work is resumed by
# the watchdog, and a stale re-delivered task does nothing.
SYNC_COALESCING_PROVIDERS = frozenset({"imap", "gmail"})

# The provider topic (queue) of each provider app.
PROVIDER_QUEUES: dict[str, str] = {
    "imap": QUEUE_SMTP,
    "gmail": QUEUE_GMAIL,
}

TASK_ROUTES: dict[str, dict[str, str]] = {
    TASK_INGEST_NEW_MESSAGES: {"queue": QUEUE_NEW_MESSAGE},
    TASK_SCHEDULE_FULL_SYNCS: {"queue": QUEUE_DEFAULT},
    TASK_DELETE_ACCOUNT: {"queue": QUEUE_DEFAULT},
    **{name: {"queue": QUEUE_FULL_SYNC} for name in FULL_SYNC_TASKS.values()},
    "smtp_sync.*": {"queue": QUEUE_SMTP},
    "gmail_sync.*": {"queue": QUEUE_GMAIL},
    "webhooks.*": {"queue": QUEUE_WEBHOOKS},
}

PAYLOAD_SCHEMA_VERSION = 1

# JSON Schema of an EmailNewMessage payload. Each message carries its raw RFC 5322 bytes,
# base64-encoded in "raw", or a reference to a staged blob in "rawRef": the whole blob (a big
# message), or the part "rawRange" [offset, length] of it (a batch's messages staged as one blob,
# see `new_message_items_staged`).
NEW_MESSAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["schema", "accountId", "provider", "messages"],
    "properties": {
        "schema": {"const": PAYLOAD_SCHEMA_VERSION},
        "accountId": {"type": "integer", "minimum": 1},
        "provider": {"type": "string", "minLength": 1},
        "syncRunId": {"type": ["integer", "null"]},
        "batchId": {"type": "integer", "minimum": 1},
        "messages": {
            "type": "array",
            "items": {
                "type": "object",
                "oneOf": [{"required": ["raw"]}, {"required": ["rawRef"]}],
                "properties": {
                    "id": {"type": ["string", "null"], "maxLength": 255},
                    "threadId": {"type": ["string", "null"], "maxLength": 255},
                    "serverId": {"type": ["string", "null"], "minLength": 1, "maxLength": 255},
                    "folder": {"type": ["string", "null"], "minLength": 1},
                    "labels": {"type": "array", "items": {"type": "string", "minLength": 1}},
                    "uid": {"type": ["integer", "null"], "minimum": 1, "maximum": 2**32 - 1},
                    "flags": {"type": "array", "items": {"type": "string"}},
                    "internalDate": {"type": ["string", "null"], "format": "date-time"},
                    "raw": {"type": "string"},
                    "rawRef": {"type": "string", "pattern": "^staged/[0-9a-f-]+\\.eml$"},
                    "rawRange": {
                        "type": "array",
                        "items": {"type": "integer", "minimum": 0},
                        "minItems": 2,
                        "maxItems": 2,
                    },
                    "includeAttachments": {"type": "boolean"},
                },
                "dependentRequired": {"rawRange": ["rawRef"]},
                "additionalProperties": False,
            },
        },
    },
    "additionalProperties": False,
}


class PayloadError(ValueError):
    """A payload that breaks the contract; the consumer dead-letters it with this reason."""


@dataclass
class IncomingMessage:
    """One message of an EmailNewMessage payload, decoded."""

    raw: bytes
    provider_id: str | None = None
    provider_thread_id: str | None = None
    folders: list[str] = field(default_factory=list)
    uid: int | None = None
    flags: list[str] | None = None
    internal_date: str | None = None
    include_attachments: bool = True
    staged_ref: str | None = None
    raw_file: str | None = None  # a local file with the raw bytes (raw is then empty)
    raw_file_is_copy: bool = False  # raw_file was downloaded from the object store for this
    # The server's own id (OBJECTID EMAILID, Dovecot X-GUID, X-GM-MSGID), kept on the message:
    # a move, copy or UIDVALIDITY change then re-maps it without downloading it again.
    server_id: str | None = None


@dataclass
class NewMessageBatch:
    account_id: int
    provider: str
    messages: list[IncomingMessage]
    sync_run_id: int | None = None
    batch_id: int | None = None  # its messages.IngestBatch row: written once, if still wanted


@functools.cache
def _validator():
    """Built once per process: building it was half the cost of checking a 50-message batch."""
    from jsonschema import Draft202012Validator, FormatChecker

    return Draft202012Validator(NEW_MESSAGE_SCHEMA, format_checker=FormatChecker())


def parse_new_message_payload(payload: Any) -> NewMessageBatch:
    """Validate and decode an EmailNewMessage payload; PayloadError says what is wrong."""
    errors = sorted(_validator().iter_errors(payload), key=lambda e: list(e.path))
    if errors:
        reasons = []
        for error in errors[:5]:
            where = "/".join(str(p) for p in error.path) or "payload"
            reasons.append(f"{where}: {error.message}")
        raise PayloadError("; ".join(reasons))
    messages: list[IncomingMessage] = []
    blobs: dict[str, bytes] = {}
    try:
        for index, item in enumerate(payload["messages"]):
            messages.append(_incoming(item, index, blobs))
    except BaseException:
        release_local_copies(messages)
        raise
    return NewMessageBatch(
        account_id=payload["accountId"],
        provider=payload["provider"],
        messages=messages,
        sync_run_id=payload.get("syncRunId"),
        batch_id=payload.get("batchId"),
    )


def _incoming(item: dict[str, Any], index: int, blobs: dict[str, bytes]) -> IncomingMessage:
    """Item INDEX decoded; BLOBS: the batch blobs read so far (each read once per payload)."""
    copy = False
    raw_file = None
    if "raw" in item:
        try:
            raw = base64.b64decode(item["raw"], validate=True)
        except ValueError as exc:
            raise PayloadError(f"messages/{index}/raw: not valid base64 ({exc})") from exc
        staged_ref = None
    elif "rawRange" in item:
        staged_ref = item["rawRef"]
        raw = _staged_part(staged_ref, item["rawRange"], index, blobs)
    else:
        staged_ref = item["rawRef"]
        raw, raw_file, copy = _read_staged(staged_ref, index)
    folders = list(item.get("labels") or [])
    if item.get("folder"):
        folders.insert(0, item["folder"])
    return IncomingMessage(
        raw=raw,
        provider_id=item.get("id"),
        provider_thread_id=item.get("threadId"),
        folders=folders,
        uid=item.get("uid"),
        flags=item.get("flags"),
        internal_date=item.get("internalDate"),
        include_attachments=item.get("includeAttachments", True),
        staged_ref=staged_ref,
        raw_file=raw_file,
        raw_file_is_copy=copy,
        server_id=item.get("serverId"),
    )


def _staged_part(ref: str, span: list[int], index: int, blobs: dict[str, bytes]) -> bytes:
    """The bytes SPAN [offset, length] of the batch blob REF."""
    from emailplatform import object_storage

    blob = blobs.get(ref)
    if blob is None:
        try:
            blob = blobs[ref] = b"".join(object_storage.read_range(ref, 0, None))
        except FileNotFoundError as exc:
            raise PayloadError(
                f"messages/{index}/rawRef: staged blob {ref} does not exist"
            ) from exc
    offset, length = span
    if offset + length > len(blob):
        raise PayloadError(
            f"messages/{index}/rawRange: {offset}+{length} is past the end of {ref}"
            f" ({len(blob)} bytes)"
        )
    return blob[offset : offset + length]


def _read_staged(ref: str, index: int) -> tuple[bytes, str | None, bool]:
    """(raw, None, False), or (b"", a local path, whether it is a copy): big mail stays on
    disk, the storage's own file or, from an object store, a copy in this process's temp dir
    (see `release_local_copies`); smaller mail from an object store is read whole."""
    from django.conf import settings

    from emailplatform import object_storage
    from emailplatform.tempdirs import process_temp_dir

    size = object_storage.stored_size(ref)
    if size is None:
        raise PayloadError(f"messages/{index}/rawRef: staged blob {ref} does not exist")
    path = object_storage.local_path(ref)
    if path is not None:
        return b"", path, False
    if size <= settings.LARGE_MESSAGE_BYTES:
        return b"".join(object_storage.read_range(ref, 0, None)), None, False
    copy = str(Path(process_temp_dir()) / f"staged-{uuid.uuid4()}.eml")
    try:
        object_storage.download_to(ref, copy)
    except BaseException:
        Path(copy).unlink(missing_ok=True)
        raise
    return b"", copy, True


def release_local_copies(messages: Iterable[IncomingMessage]) -> None:
    """Remove the local copies of staged blobs that parsing the payload downloaded."""
    for message in messages:
        if message.raw_file_is_copy and message.raw_file:
            Path(message.raw_file).unlink(missing_ok=True)


def stage_raw(raw: bytes | None = None, *, path: str | None = None) -> str:
    """Put a big message (its bytes, or the file at PATH, streamed) in blob storage and return
    the reference to carry on the queue."""
    from django.core.files import File
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    name = f"staged/{uuid.uuid4()}.eml"
    if path is None:
        return default_storage.save(name, ContentFile(raw or b""))
    with open(path, "rb") as handle:
        return default_storage.save(name, File(handle))


def delete_staged(refs: Iterable[str]) -> None:
    """Delete the staged blobs REFS (a batch blob is named once per message: deleted once)."""
    from django.core.files.storage import default_storage

    for ref in dict.fromkeys(refs):
        default_storage.delete(ref)


def new_message_item(
    raw: bytes,
    *,
    raw_base64: str | None = None,
    raw_file: str | None = None,
    raw_part: tuple[str, int, int] | None = None,
    provider_id: str | None = None,
    thread_id: str | None = None,
    folder: str | None = None,
    labels: list[str] | None = None,
    uid: int | None = None,
    flags: list[str] | None = None,
    internal_date: str | None = None,
    include_attachments: bool = True,
    server_id: str | None = None,
) -> dict[str, Any]:
    """Build one message entry of an EmailNewMessage payload (RAW_FILE: the raw bytes are in
    this local file instead, always staged; RAW_BASE64: they are given already encoded, in
    standard padded base64; RAW_PART: (ref, offset, length), they are staged already, in a
    batch blob; RAW is not read with any of these)."""
    from django.conf import settings

    item: dict[str, Any] = {}
    if raw_part is not None:
        ref, offset, length = raw_part
        item["rawRef"] = ref
        item["rawRange"] = [offset, length]
    elif raw_base64 is not None:
        if _base64_size(raw_base64) <= settings.INLINE_RAW_LIMIT_BYTES:
            item["raw"] = raw_base64
        else:
            item["rawRef"] = stage_raw(base64.b64decode(raw_base64))
    elif raw_file is not None:
        item["rawRef"] = stage_raw(path=raw_file)
    elif len(raw) > settings.INLINE_RAW_LIMIT_BYTES:
        item["rawRef"] = stage_raw(raw)
    else:
        item["raw"] = base64.b64encode(raw).decode("ascii")
    optional = {
        "id": provider_id,
        "threadId": thread_id,
        "serverId": server_id,
        "folder": folder,
        "labels": labels,
        "uid": uid,
        "flags": flags,
        "internalDate": internal_date,
    }
    item.update({key: value for key, value in optional.items() if value is not None})
    if not include_attachments:
        item["includeAttachments"] = False
    return item


def new_message_items_staged(raws: Sequence[bytes], fields: Sequence[dict[str, Any]]) -> list[dict]:
    """The items of one batch whose raw bytes go to blob storage as one staged blob, each item
    naming its part (FIELDS: each message's other `new_message_item` arguments).

    Inline, a 4 MB batch crosses the queue as base64 inside JSON inside JSON: base64-encoded
    and JSON-encoded by the producer, JSON-encoded again for the transport's envelope and for
    Redis' copy of unacknowledged messages, decoded back by the consumer. In a profile of a
    10,000-message full sync that was a quarter of the producer's CPU (JSON encoding alone).
    A blob is written once and read once; the message is a few KB of references. The blob
    lives as a big message's does: named in the batch's row, deleted once the batch is stored
    or lost, swept if its producer died."""
    ref = stage_raw(b"".join(raws))
    items, offset = [], 0
    for raw, kwargs in zip(raws, fields, strict=True):
        items.append(new_message_item(b"", raw_part=(ref, offset, len(raw)), **kwargs))
        offset += len(raw)
    return items


def _base64_size(encoded: str) -> int:
    """The length of what padded base64 ENCODED decodes to."""
    return len(encoded) // 4 * 3 - (2 if encoded.endswith("==") else encoded.endswith("="))


def new_message_payload(
    account_id: int,
    provider: str,
    items: list[dict[str, Any]],
    sync_run_id: int | None = None,
    batch_id: int | None = None,
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "schema": PAYLOAD_SCHEMA_VERSION,
        "accountId": account_id,
        "provider": provider,
        "messages": items,
    }
    if sync_run_id is not None:
        payload["syncRunId"] = sync_run_id
    if batch_id is not None:
        payload["batchId"] = batch_id
    return payload


def publish_new_messages(payload: dict[str, Any]) -> None:
    """Publish an EmailNewMessage batch (after the current transaction commits, if any)."""
    from django.db import transaction

    transaction.on_commit(lambda: send_new_messages(payload))


def send_new_messages(payload: dict[str, Any]) -> None:
    """Put an EmailNewMessage batch on its queue now."""
    _send(TASK_INGEST_NEW_MESSAGES, [payload], QUEUE_NEW_MESSAGE)


def publish_full_sync(
    account_id: int, provider: str, options: dict[str, Any] | None = None
) -> bool:
    """Ask for a full sync of an account (coalesced, see `publish_sync`); False when its
    provider has nothing to sync."""
    return publish_sync(account_id, provider, kind="full", options=options)


def publish_sync(
    account_id: int, provider: str, *, kind: str, options: dict[str, Any] | None = None
) -> bool:
    """The one way to ask for a sync pass (KIND: "full", "incremental" or "continue").

    For providers whose consumers coalesce (SYNC_COALESCING_PROVIDERS), the request is recorded
    per account in Redis (`emailplatform.syncstate`) after the current transaction commits, and
    a task is enqueued only when none is queued for that route and no sync is running (the
    running one runs once more at its end): 50 requests make one task. Other providers get one
    task per request. False when the provider has nothing to sync of that kind.
    """
    from django.db import transaction

    route_full = kind != "incremental"
    task_name = (FULL_SYNC_TASKS if route_full else INCREMENTAL_SYNC_TASKS).get(provider)
    if task_name is None:
        return False
    queue = QUEUE_FULL_SYNC if route_full else PROVIDER_QUEUES[provider]
    options = options or {}
    if provider not in SYNC_COALESCING_PROVIDERS:
        payload = {"accountId": account_id, "provider": provider, "options": options}
        args: list[Any] = [payload] if route_full else [account_id]
        transaction.on_commit(lambda: _send(task_name, args, queue))
        return True
    transaction.on_commit(
        lambda: sync_request_now(account_id, provider, kind=kind, options=options)
    )
    return True


def sync_request_now(
    account_id: int, provider: str, *, kind: str, options: dict[str, Any] | None = None
) -> bool:
    """Record a sync request now (outside any transaction) and enqueue a task if one is due.

    True when a task was enqueued."""
    from . import syncstate

    token = syncstate.new_token()
    if syncstate.request(account_id, kind, token) != syncstate.REQUEST_ENQUEUE:
        return False
    try:
        if kind == "incremental":
            _send(
                INCREMENTAL_SYNC_TASKS[provider],
                [account_id, token],
                PROVIDER_QUEUES[provider],
            )
        else:
            payload = {
                "accountId": account_id,
                "provider": provider,
                "options": options or {},
                "trigger": token,
                "continuation": kind == "continue",
            }
            _send(FULL_SYNC_TASKS[provider], [payload], QUEUE_FULL_SYNC)
    except Exception:
        # Not on the queue: free the route at once (the want stays; the watchdog enqueues it).
        syncstate.queued_clear(account_id, syncstate.route_of(kind), token)
        raise
    return True


def _send(task_name: str, args: list[Any], queue: str) -> None:
    from .celery import app

    app.send_task(task_name, args=args, queue=queue)


def publish_message_change(
    account_id: int, provider: str, message_id: int, change: dict[str, Any]
) -> bool:
    """Ask the provider app to apply a client's change; False when the provider has none."""
    from django.db import transaction

    from .celery import app

    task_name = MESSAGE_CHANGE_TASKS.get(provider)
    if task_name is None:
        return False
    args = [account_id, message_id, change]
    queue = PROVIDER_QUEUES[provider]
    transaction.on_commit(lambda: app.send_task(task_name, args=args, queue=queue))
    return True


def publish_incremental_sync(account_id: int, provider: str) -> bool:
    """Ask the provider app for an incremental sync (coalesced, see `publish_sync`); False
    when the provider has none."""
    return publish_sync(account_id, provider, kind="incremental")


def publish_account_deletion(account_id: int) -> None:
    """Delete an account and its mail in the background (after the current transaction)."""
    from django.db import transaction

    from .celery import app

    transaction.on_commit(
        lambda: app.send_task(TASK_DELETE_ACCOUNT, args=[account_id], queue=QUEUE_DEFAULT)
    )


def celery_queues() -> list[Queue]:
    return [Queue(name, Exchange(name), routing_key=name) for name in ALL_QUEUES]
