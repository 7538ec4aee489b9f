"""Reads of the store for the API, always scoped to one owner.

Every selector takes the user and returns only that user's objects: another user's object is
simply not found (the API answers 404, never 403). Staff get no wider view here.
Objects of accounts being deleted are hidden, except the account itself (its status shows).
"""

from __future__ import annotations

import time
from collections.abc import Collection

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.contrib.postgres.expressions import ArraySubquery
from django.db.models import (
    Count,
    IntegerField,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models.functions import Coalesce, JSONObject

from . import providers
from .models import (
    Account,
    Attachment,
    ChangeEvent,
    DeliveryReport,
    Folder,
    Message,
    MessageLocation,
    OutboundAttachment,
    OutboundMessage,
    OutboundRecipient,
    RawMessage,
    SyncRun,
    Thread,
)

User = AbstractBaseUser | AnonymousUser

SEARCH_CONFIG = "simple"
# The changes feed's long poll: at most this long, looking every POLL_INTERVAL seconds.
CHANGES_MAX_WAIT_SECONDS = 30.0
CHANGES_POLL_INTERVAL = 0.5
# Columns a message summary does not show (bodies can be megabytes).
SUMMARY_DEFERRED = ("body_text", "body_html", "search_vector", "references", "defects")
# What a message list reads of each message (messages.message_page).
SUMMARY_COLUMNS = (
    "id",
    "account_id",
    "thread_id",
    "subject",
    "from_name",
    "from_address",
    "to",
    "cc",
    "date",
    "sort_date",
    "snippet",
    "is_read",
    "is_flagged",
    "is_answered",
    "is_draft",
    "has_attachments",
    "size",
)


def _owned_accounts(user: User) -> QuerySet[Account]:
    return Account.objects.filter(owner_id=user.pk)


def _visible_accounts(user: User) -> QuerySet[Account]:
    return _owned_accounts(user).exclude(status=Account.Status.DELETING)


# Accounts ----------------------------------------------------------------------------------
def account_list(*, user: User) -> QuerySet[Account]:
    """The user's accounts, with the progress of the latest live sync run.

    Only runs marked running count, and a run whose pass is over never stays so: a pass that
    ends marks its run, and the run of a dead worker (or one cut off by a database outage) is
    marked interrupted by the sync watchdog once the account's lock is gone (within a minute),
    or by the account's next sync, whichever comes first."""
    running = SyncRun.objects.filter(
        account=OuterRef("pk"), status=SyncRun.Status.RUNNING
    ).order_by("-started_at", "-id")
    return (
        _owned_accounts(user)
        .select_related(*providers.related_names())
        .annotate(
            running_sync_kind=Subquery(running.values("kind")[:1]),
            running_sync_done=Subquery(running.values("progress_done")[:1]),
            running_sync_total=Subquery(running.values("progress_total")[:1]),
        )
    )


def account_get(*, user: User, account_id: int) -> Account | None:
    return account_list(user=user).filter(pk=account_id).first()


def accounts_by_id(*, user: User, ids: Collection[int]) -> dict[int, Account]:
    """Those of the user's accounts IDS names, whatever their status (one query, no sync
    progress; none when IDS is empty)."""
    if not ids:
        return {}
    return {a.pk: a for a in _owned_accounts(user).filter(pk__in=list(ids))}


# Folders -----------------------------------------------------------------------------------
def folder_list(*, user: User, account_id: int | None = None) -> QuerySet[Folder]:
    """Folders with their total and unread message counts, counted in the same query.

    A message held twice in one folder (two UIDs) counts once.
    """
    folders = Folder.objects.filter(account__in=_visible_accounts(user))
    if account_id is not None:
        folders = folders.filter(account_id=account_id)
    return folders.annotate(
        total_count=Count("locations__message", distinct=True),
        unread_count=Count(
            "locations__message",
            filter=Q(locations__message__is_read=False),
            distinct=True,
        ),
    )


# Threads -----------------------------------------------------------------------------------
# What a thread list reads of each thread (messages.api.serializers.thread_summaries).
THREAD_SUMMARY_COLUMNS = (
    "id",
    "account_id",
    "subject",
    "snippet",
    "message_count",
    "unread_count",
    "last_message_at",
    "senders",
)


def thread_list(*, user: User) -> QuerySet[Thread]:
    """Threads with activity, with unread count and participants (senders, first seen first).

    Counts and participants are correlated subqueries, so PostgreSQL computes them only for
    the page of threads returned.
    """
    unread = (
        Message.objects.filter(thread=OuterRef("pk"), is_read=False)
        .order_by()
        .values("thread")
        .annotate(n=Count("id"))
        .values("n")
    )
    senders = (
        Message.objects.filter(thread=OuterRef("pk"))
        .order_by("sort_date", "id")
        .values(person=JSONObject(name="from_name", address="from_address"))
    )
    return Thread.objects.filter(
        account__in=_visible_accounts(user), last_message_at__isnull=False
    ).annotate(
        unread_count=Coalesce(Subquery(unread, output_field=IntegerField()), Value(0)),
        senders=ArraySubquery(senders),
    )


def thread_get(*, user: User, thread_id: int) -> Thread | None:
    messages = (
        Message.objects.order_by("sort_date", "id")
        .defer(*SUMMARY_DEFERRED)
        .prefetch_related(Prefetch("locations", queryset=_locations()))
    )
    return (
        thread_list(user=user)
        .prefetch_related(Prefetch("messages", queryset=messages))
        .filter(pk=thread_id)
        .first()
    )


def participants(senders: list[dict[str, str]]) -> list[dict[str, str]]:
    """Distinct people by address (case-insensitively), in order of first appearance."""
    seen: dict[str, dict[str, str]] = {}
    for person in senders or []:
        key = (person.get("address") or person.get("name") or "").lower()
        if key and key not in seen:
            seen[key] = {"name": person.get("name") or "", "address": person.get("address") or ""}
    return list(seen.values())


# Messages ----------------------------------------------------------------------------------
def _locations() -> QuerySet[MessageLocation]:
    return MessageLocation.objects.select_related("folder").order_by("folder__name", "id")


def message_get(*, user: User, message_id: int) -> Message | None:
    return (
        Message.objects.filter(account__in=_visible_accounts(user), pk=message_id)
        .defer("search_vector")
        .select_related("account", "delivery_report")
        .prefetch_related(
            Prefetch("locations", queryset=_locations()),
            Prefetch("attachments", queryset=Attachment.objects.order_by("id")),
        )
        .first()
    )


def messages_by_id(*, user: User, ids: Collection[int]) -> dict[int, Message]:
    """Those of the user's messages IDS names, with their attachments (what a reply or a
    forward needs of them)."""
    if not ids:
        return {}
    messages = (
        Message.objects.filter(account__in=_visible_accounts(user), pk__in=list(ids))
        .defer("search_vector")
        .prefetch_related(Prefetch("attachments", queryset=Attachment.objects.order_by("id")))
    )
    return {m.pk: m for m in messages}


def message_raw(*, user: User, message_id: int) -> RawMessage | None:
    return RawMessage.objects.filter(
        message__account__in=_visible_accounts(user), pk=message_id
    ).first()


def attachment_get(*, user: User, attachment_id: int) -> Attachment | None:
    return (
        Attachment.objects.filter(message__account__in=_visible_accounts(user), pk=attachment_id)
        .select_related("message")
        .first()
    )


def attachments_by_id(*, user: User, ids: Collection[int]) -> dict[int, Attachment]:
    if not ids:
        return {}
    attachments = Attachment.objects.filter(
        message__account__in=_visible_accounts(user), pk__in=list(ids)
    ).select_related("message")
    return {a.pk: a for a in attachments}


def message_has_folder(*, message: Message, folder_name: str) -> bool:
    return Folder.objects.filter(account_id=message.account_id, name=folder_name).exists()


def account_has_trash(*, account: Account) -> bool:
    return Folder.objects.filter(account=account, role=Folder.Role.TRASH).exists()


# Outbox ------------------------------------------------------------------------------------
OUTBOUND_LIST_DEFERRED = ("raw", "body_text", "body_html")


def outbound_list(*, user: User) -> QuerySet[OutboundMessage]:
    """The user's outbound messages (bodies and MIME bytes left out)."""
    return OutboundMessage.objects.filter(account__in=_visible_accounts(user)).defer(
        *OUTBOUND_LIST_DEFERRED
    )


def outbound_get(*, user: User, outbound_id: int) -> OutboundMessage | None:
    """One outbound message with its recipients, attachments and delivery reports."""
    return (
        OutboundMessage.objects.filter(account__in=_visible_accounts(user), pk=outbound_id)
        .defer("raw")
        .select_related("account")
        .prefetch_related(
            Prefetch("recipients", queryset=OutboundRecipient.objects.order_by("id")),
            Prefetch("attachments", queryset=OutboundAttachment.objects.order_by("id")),
            Prefetch("reports", queryset=DeliveryReport.objects.order_by("id")),
        )
        .first()
    )


# Changes feed ------------------------------------------------------------------------------
def changes_since(*, user: User, cursor: int, limit: int) -> list[ChangeEvent]:
    """The user's change events after `cursor`, in id order (which is commit order)."""
    return list(ChangeEvent.objects.filter(owner_id=user.pk, id__gt=cursor).order_by("id")[:limit])


def changes_wait(*, user: User, cursor: int, limit: int, wait: float) -> list[ChangeEvent]:
    """Like changes_since, but waits up to `wait` seconds for the first event to arrive."""
    deadline = time.monotonic() + min(wait, CHANGES_MAX_WAIT_SECONDS)
    while True:
        events = changes_since(user=user, cursor=cursor, limit=limit)
        if events or time.monotonic() >= deadline:
            return events
        time.sleep(min(CHANGES_POLL_INTERVAL, max(0.0, deadline - time.monotonic())))
