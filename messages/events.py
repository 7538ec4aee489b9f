"""Change events for the changes feed, recorded inside the writing transaction."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection, transaction

from .models import Account, ChangeEvent, Message

EVENT_LOCK_NAMESPACE = 7202


def events_record(account: Account, object_type: str, kind: str, object_ids: Iterable[int]) -> None:
    """Record events; call it last in the transaction (it holds the owner's event lock until
    commit, which makes the feed's id order the commit order)."""
    ids = sorted(set(object_ids))
    if not ids:
        return
    # No savepoint of its own: a failure here fails the caller's transaction anyway, and two
    # statements fewer per call are a tenth of storing a one-message batch.
    with transaction.atomic(savepoint=False):
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)", [EVENT_LOCK_NAMESPACE, account.owner_id]
            )
        ChangeEvent.objects.bulk_create(
            [
                ChangeEvent(
                    owner_id=account.owner_id,
                    account_id=account.pk,
                    object_type=object_type,
                    object_id=object_id,
                    kind=kind,
                )
                for object_id in ids
            ],
            batch_size=1000,
        )


def messages_updated(account: Account, message_ids: Iterable[int]) -> None:
    """Message events, plus thread events: a thread's unread count and folders follow its
    messages, so a client showing the thread must hear of it too."""
    ids = set(message_ids)
    if not ids:
        return
    thread_ids = set(Message.objects.filter(id__in=ids).values_list("thread_id", flat=True))
    events_record(account, "message", "updated", ids)
    events_record(account, "thread", "updated", thread_ids)
