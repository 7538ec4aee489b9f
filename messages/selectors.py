"""Reads of the store for the API, always scoped to one owner.

Every selector takes the user and returns only that user's objects: another user's object is
simply not found (the API answers 404, never 403). Staff get no wider view here.
Objects of accounts being deleted are hidden, except the account itself (its status shows).
"""

from __future__ import annotations

import time

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.contrib.postgres.expressions import ArraySubquery
from django.contrib.postgres.search import SearchQuery, SearchRank
from django.db.models import (
    Count,
    Exists,
    F,
    FilteredRelation,
    FloatField,
    IntegerField,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models.functions import Cast, Coalesce, JSONObject

from . import providers
from .models import (
    Account,
    Attachment,
    ChangeEvent,
    Folder,
    Message,
    MessageLocation,
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
# A folder's list orders by this annotation in place of `sort_date` (see _in_folder).
FOLDER_SORT_DATE = "folder_sort_date"
# What a message list reads of each message (messages.api.serializers.message_summary).
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
    return (
        Thread.objects.filter(account__in=_visible_accounts(user), last_message_at__isnull=False)
        .annotate(
            unread_count=Coalesce(Subquery(unread, output_field=IntegerField()), Value(0)),
            senders=ArraySubquery(senders),
        )
        .select_related("account")
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


def message_list(*, user: User, folder_id: int | None = None) -> QuerySet[Message]:
    """The user's messages (those in one folder with `folder_id`).

    In a folder, the folder is what is scoped to the user (its locations hold only its
    account's messages). A condition on the messages' account as well would make PostgreSQL
    take "in this folder" and "of this account" as independent (1 in 100 accounts): it would
    expect a few rows and sort the whole folder instead of walking its index to the page.
    """
    if folder_id is None:
        messages = Message.objects.filter(account__in=_visible_accounts(user))
    else:
        folders = Folder.objects.filter(account__in=_visible_accounts(user), pk=folder_id)
        messages = _in_folder(Message.objects.all(), folder_id, folders.values("pk"))
    return messages


def message_summary_rows(messages: QuerySet[Message]) -> QuerySet[dict]:
    """A list's messages as plain rows: SUMMARY_COLUMNS, `folder_names` (sorted, each once)
    and the annotations a list orders by. No model instances and no prefetch query: for a
    page of 50 they cost more than the query itself. PostgreSQL computes the folder names
    after the page's LIMIT, for its rows only."""
    ordering_annotations = [
        name for name in (FOLDER_SORT_DATE, "search_rank") if name in messages.query.annotations
    ]
    names = (
        MessageLocation.objects.filter(message=OuterRef("pk"))
        .order_by("folder__name")
        .values("folder__name")
        .distinct()
    )
    return messages.annotate(folder_names=ArraySubquery(names)).values(
        *SUMMARY_COLUMNS, "folder_names", *ordering_annotations
    )


def _in_folder(
    messages: QuerySet[Message], folder_id: int, visible_folders: QuerySet[Folder]
) -> QuerySet[Message]:
    """The messages held in a folder, each once, with the folder's own copy of their date.

    Ordered by FOLDER_SORT_DATE (equal to `sort_date`) and id, a folder's list is a walk of
    the index on its locations that stops at the page, not a sort of the whole folder. A
    message held twice in the folder (two UIDs) comes through its first location only.
    """
    # OuterRef("folder_location__pk") would join the locations a second time: an alias first.
    earlier = MessageLocation.objects.filter(
        message=OuterRef("pk"), folder_id=folder_id, pk__lt=OuterRef("folder_location_id")
    )
    return (
        messages.annotate(
            folder_location=FilteredRelation(
                "locations", condition=Q(locations__folder_id=folder_id)
            )
        )
        # One filter() call: a second one would join the locations again.
        .filter(
            folder_location__folder_id=folder_id, folder_location__folder_id__in=visible_folders
        )
        .alias(folder_location_id=F("folder_location__pk"))
        .annotate(**{FOLDER_SORT_DATE: F("folder_location__sort_date")})
        .filter(~Exists(earlier))
    )


def message_search(
    messages: QuerySet[Message], text: str, *, ranked: bool = False
) -> QuerySet[Message]:
    """Full-text search over subject (weight A), sender (B) and body (C); `ranked` annotates
    the rank that lists order by first.

    The query is read as a web search (quoted phrases, OR, -excluded); the (account, vector)
    GIN index answers a rare word, the account's newest-first index a common one (unranked,
    a page then reads about 50 matches; ranked, every match of the account is read).
    """
    query = SearchQuery(text, search_type="websearch", config=SEARCH_CONFIG)
    found = messages.filter(search_vector=query)
    if not ranked:
        return found
    # double precision: ts_rank's real would not survive a round trip through a page cursor.
    return found.annotate(search_rank=Cast(SearchRank(F("search_vector"), query), FloatField()))


def message_get(*, user: User, message_id: int) -> Message | None:
    return (
        Message.objects.filter(account__in=_visible_accounts(user), pk=message_id)
        .defer("search_vector")
        .select_related("account")
        .prefetch_related(
            Prefetch("locations", queryset=_locations()),
            Prefetch("attachments", queryset=Attachment.objects.order_by("id")),
        )
        .first()
    )


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


def message_has_folder(*, message: Message, folder_name: str) -> bool:
    return Folder.objects.filter(account_id=message.account_id, name=folder_name).exists()


def account_has_trash(*, account: Account) -> bool:
    return Folder.objects.filter(account=account, role=Folder.Role.TRASH).exists()


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
