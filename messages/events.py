"""Change events for the changes feed, recorded inside the writing transaction."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection, transaction
from django.dispatch import Signal
from django.utils import timezone

from .models import Account, ChangeEvent, Message

EVENT_LOCK_NAMESPACE = 7202

Events = Iterable[tuple[str, str, Iterable[int]]]  # (object type, kind, object ids)
# (account id, object type, kind, object ids)
AccountEvents = Iterable[tuple[int, str, str, Iterable[int]]]

# Sent after the commit of a transaction that recorded events, with `owner_id`: the webhooks
# app listens (the store knows nothing of its listeners).
events_committed = Signal()

_TABLE = ChangeEvent._meta.db_table
# The owner's lock, then the rows in the order given: one statement, so one round trip, and
# the lock is held before the first id is drawn (the rows are produced after it).
_INSERT = f"""
    WITH owner_lock AS MATERIALIZED (SELECT pg_advisory_xact_lock(%s, %s))
    INSERT INTO {_TABLE} (owner_id, account_id, object_type, object_id, kind, created_at)
    SELECT %s, e.account_id, e.object_type, e.object_id, e.kind, %s
      FROM owner_lock,
           unnest(%s::bigint[], %s::varchar[], %s::bigint[], %s::varchar[]) WITH ORDINALITY
           AS e(account_id, object_type, object_id, kind, n)
     ORDER BY e.n
"""


def events_record(account: Account, object_type: str, kind: str, object_ids: Iterable[int]) -> None:
    """Record events; call it last in the transaction (it holds the owner's event lock until
    commit, which makes the feed's id order the commit order)."""
    events_record_many(account, [(object_type, kind, object_ids)])


def events_record_many(account: Account, events: Events) -> None:
    """`events_record` for several kinds of events at once, in the order given."""
    events_record_accounts(
        account.owner_id,
        [(account.pk, object_type, kind, ids) for object_type, kind, ids in events],
    )


def events_record_accounts(owner_id: int, events: AccountEvents) -> None:
    """`events_record_many` for events of several accounts of one owner, in one statement."""
    rows = [
        (account_id, object_type, object_id, kind)
        for account_id, object_type, kind, object_ids in events
        for object_id in sorted(set(object_ids))
    ]
    if not rows:
        return
    accounts, types, ids, kinds = (list(column) for column in zip(*rows, strict=True))
    with connection.cursor() as cursor:
        cursor.execute(
            _INSERT,
            [EVENT_LOCK_NAMESPACE, owner_id, owner_id, timezone.now(), accounts, types, ids, kinds],
        )
    transaction.on_commit(lambda: events_committed.send(sender=ChangeEvent, owner_id=owner_id))


def messages_updated(account: Account, message_ids: Iterable[int]) -> None:
    """Message events, plus thread events: a thread's unread count and folders follow its
    messages, so a client showing the thread must hear of it too."""
    events_record_many(account, messages_updated_events(message_ids))


def messages_updated_events(message_ids: Iterable[int]) -> list[tuple[str, str, set[int]]]:
    """The events of `messages_updated`, to record with others."""
    ids = set(message_ids)
    if not ids:
        return []
    thread_ids = set(Message.objects.filter(id__in=ids).values_list("thread_id", flat=True))
    return [("message", "updated", ids), ("thread", "updated", thread_ids)]
