"""Webhook event types and their payloads, from the store's change events.

An event type is `<object>.<kind>` of the ChangeEvent (message.created, thread.updated,
account.updated ...), except a finished sync run, `sync.finished`. The payload's `data` is the
object as it was when the event was handed on to the endpoints (deleted objects: ids only).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db.models import F
from django.db.models.functions import Coalesce

from messages.models import (
    Account,
    ChangeEvent,
    Folder,
    Message,
    MessageLocation,
    OutboundMessage,
    OutboundRecipient,
    SyncRun,
    Thread,
)

SYNC_FINISHED = "sync.finished"

EVENT_TYPES: tuple[str, ...] = (
    "message.created",
    "message.updated",
    "message.deleted",
    "thread.created",
    "thread.updated",
    "thread.deleted",
    "folder.created",
    "folder.updated",
    "folder.deleted",
    "account.created",
    "account.updated",
    "account.deleted",
    SYNC_FINISHED,
    "outbound.created",
    "outbound.updated",
    "outbound.deleted",
)
EVENT_TYPE_HELP = {
    "account.updated": "Status, last error or last sync changed (account status).",
    SYNC_FINISHED: "A sync run ended: succeeded, failed or interrupted, with its counts.",
    "outbound.updated": "An outbound message's state or a recipient's delivery status changed "
    "(sent, failed, delivered, delayed, bounced).",
}


def event_type(event: ChangeEvent) -> str:
    if event.object_type == ChangeEvent.ObjectType.SYNC_RUN:
        return SYNC_FINISHED
    return f"{event.object_type}.{event.kind}"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def payload(event: ChangeEvent, data: dict[str, Any]) -> dict[str, Any]:
    """The JSON body of one delivery (snake_case keys, like the API)."""
    return {
        "id": event.pk,
        "type": event_type(event),
        "created_at": _iso(event.created_at),
        "account_id": event.account_id,
        "data": data,
    }


def objects_data(events: Iterable[ChangeEvent]) -> dict[tuple[str, int], dict[str, Any]]:
    """Each live object's data, keyed (object type, id): one query per type."""
    ids: dict[str, set[int]] = defaultdict(set)
    for event in events:
        if event.kind != ChangeEvent.Kind.DELETED:
            ids[event.object_type].add(event.object_id)
    found: dict[tuple[str, int], dict[str, Any]] = {}
    for object_type, object_ids in ids.items():
        reader = _READERS.get(object_type)
        if reader is None:
            continue
        for row in reader(object_ids):
            found[(object_type, row["id"])] = {"object": object_type, **row}
    return found


def event_data(event: ChangeEvent, found: dict[tuple[str, int], dict[str, Any]]) -> dict:
    data = found.get((event.object_type, event.object_id))
    if data is None:  # deleted, or gone since
        return {"object": event.object_type, "id": event.object_id, "deleted": True}
    return data


def _accounts(ids: set[int]) -> list[dict]:
    rows = Account.objects.filter(pk__in=ids).values(
        "id", "provider", "email_address", "status", "last_error", "last_sync_at"
    )
    return [{**r, "last_sync_at": _iso(r["last_sync_at"])} for r in rows]


def _folders(ids: set[int]) -> list[dict]:
    return list(
        Folder.objects.filter(pk__in=ids).values("id", "account_id", "name", "display_name", "role")
    )


def _threads(ids: set[int]) -> list[dict]:
    rows = Thread.objects.filter(pk__in=ids).values(
        "id", "account_id", "subject", "snippet", "message_count", "last_message_at"
    )
    return [{**r, "last_message_at": _iso(r["last_message_at"])} for r in rows]


def _messages(ids: set[int]) -> list[dict]:
    rows = list(
        Message.objects.filter(pk__in=ids).values(
            "id",
            "account_id",
            "thread_id",
            "message_id_header",
            "subject",
            "from_name",
            "from_address",
            "to",
            "cc",
            "snippet",
            "size",
            "is_read",
            "is_flagged",
            "is_answered",
            "is_draft",
            "has_attachments",
            shown_date=Coalesce(F("date"), F("internal_date")),
        )
    )
    folders: dict[int, list[str]] = defaultdict(list)
    locations = MessageLocation.objects.filter(message_id__in=ids).values_list(
        "message_id", "folder__name"
    )
    for message_id, name in locations:
        folders[message_id].append(name)
    return [
        {
            "id": r["id"],
            "account_id": r["account_id"],
            "thread_id": r["thread_id"],
            "message_id": r["message_id_header"],
            "subject": r["subject"],
            "from": {"name": r["from_name"], "address": r["from_address"]},
            "to": r["to"],
            "cc": r["cc"],
            "date": _iso(r["shown_date"]),
            "snippet": r["snippet"],
            "size": r["size"],
            "is_read": r["is_read"],
            "is_flagged": r["is_flagged"],
            "is_answered": r["is_answered"],
            "is_draft": r["is_draft"],
            "has_attachments": r["has_attachments"],
            "folders": sorted(folders.get(r["id"], [])),
        }
        for r in rows
    ]


def _sync_runs(ids: set[int]) -> list[dict]:
    rows = SyncRun.objects.filter(pk__in=ids).values(
        "id",
        "account_id",
        "kind",
        "status",
        "started_at",
        "finished_at",
        "created",
        "updated",
        "deleted",
        "damaged",
        "error",
    )
    return [
        {**r, "started_at": _iso(r["started_at"]), "finished_at": _iso(r["finished_at"])}
        for r in rows
    ]


def _outbound(ids: set[int]) -> list[dict]:
    rows = list(
        OutboundMessage.objects.filter(pk__in=ids).values(
            "id", "account_id", "state", "message_id_header", "subject", "last_error", "sent_at"
        )
    )
    recipients: dict[int, list[dict]] = defaultdict(list)
    for r in (
        OutboundRecipient.objects.filter(outbound_id__in=ids)
        .order_by("id")
        .values("outbound_id", "kind", "address", "status", "smtp_code")
    ):
        recipients[r.pop("outbound_id")].append(r)
    return [
        {
            "id": r["id"],
            "account_id": r["account_id"],
            "state": r["state"],
            "message_id": r["message_id_header"],
            "subject": r["subject"],
            "last_error": r["last_error"],
            "sent_at": _iso(r["sent_at"]),
            "recipients": recipients.get(r["id"], []),
        }
        for r in rows
    ]


_READERS = {
    ChangeEvent.ObjectType.ACCOUNT: _accounts,
    ChangeEvent.ObjectType.FOLDER: _folders,
    ChangeEvent.ObjectType.THREAD: _threads,
    ChangeEvent.ObjectType.MESSAGE: _messages,
    ChangeEvent.ObjectType.SYNC_RUN: _sync_runs,
    ChangeEvent.ObjectType.OUTBOUND: _outbound,
}
