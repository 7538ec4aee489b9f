"""The outbound message's state machine: every change of state goes through here.

    draft -> queued -> sending -> sent
                  \\-> cancelled   \\-> queued (retry later) | failed | unknown
    unknown -> sent (found in the Sent folder) | queued (proven not sent) | failed

Each transition is one transaction that locks the row, checks the state it leaves, and records
an "outbound" change event for the feed. Only the outbound row is locked (`of=("self",)`), not
its account: FOR UPDATE on the account row, then the owner's event lock, deadlocked with a
transaction storing the sent copy (event lock, then its foreign keys' KEY SHARE on the account
at commit). Inside a caller's transaction no savepoint is taken (two round trips less): a
failure aborts the caller's transaction anyway. A transition from the wrong state returns None (the
caller lost a race, e.g. a cancel against a worker's claim) and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from .events import events_record
from .models import OutboundMessage, OutboundRecipient

State = OutboundMessage.State


def _transition(
    outbound_id: int, leaving: Iterable[str], **changes: object
) -> OutboundMessage | None:
    with transaction.atomic(savepoint=False):
        outbound = (
            OutboundMessage.objects.select_for_update(of=("self",))
            .select_related("account")
            .filter(pk=outbound_id, state__in=list(leaving))
            .first()
        )
        if outbound is None:
            return None
        for name, value in changes.items():
            setattr(outbound, name, value)
        outbound.save(update_fields=[*changes, "updated_at"])
        events_record(outbound.account, "outbound", "updated", [outbound.pk])
    return outbound


def queued_fields(
    raw: bytes, send_at: datetime | None, now: datetime | None = None
) -> dict[str, object]:
    """What draft -> queued sets: the MIME bytes fixed, due at SEND_AT (NOW when None). Also
    for a message composed and queued at once (messages.outbox), not yet stored."""
    now = now or timezone.now()
    return {
        "state": State.QUEUED,
        "raw": raw,
        "size": len(raw),
        "send_at": send_at,
        "queued_at": now,
        "next_attempt_at": send_at or now,
        "last_error": "",
    }


def outbound_queue(
    outbound_id: int, raw: bytes, send_at: datetime | None = None
) -> OutboundMessage | None:
    """draft -> queued with its MIME bytes fixed; due at SEND_AT (now when None)."""
    return _transition(outbound_id, [State.DRAFT], **queued_fields(raw, send_at))


def outbound_cancel(outbound_id: int) -> OutboundMessage | None:
    """draft or queued -> cancelled; None once a worker has started sending it."""
    return _transition(
        outbound_id, [State.DRAFT, State.QUEUED], state=State.CANCELLED, next_attempt_at=None
    )


def outbound_claim(outbound_id: int) -> OutboundMessage | None:
    """queued and due -> sending, for one attempt; None when it is not this worker's to send
    (cancelled, already claimed, sent, or not due yet)."""
    now = timezone.now()
    with transaction.atomic(savepoint=False):
        outbound = (
            OutboundMessage.objects.select_for_update(of=("self",))
            .select_related("account")
            .filter(pk=outbound_id, state=State.QUEUED, next_attempt_at__lte=now)
            .first()
        )
        if outbound is None:
            return None
        outbound.state = State.SENDING
        outbound.sending_at = now
        outbound.attempts += 1
        outbound.save(update_fields=["state", "sending_at", "attempts", "updated_at"])
        events_record(outbound.account, "outbound", "updated", [outbound.pk])
    return outbound


def outbound_sent(
    outbound_id: int, leaving: Iterable[str] = (State.SENDING, State.UNKNOWN)
) -> OutboundMessage | None:
    """sending (or unknown, once found in Sent) -> sent."""
    return _transition(
        outbound_id,
        leaving,
        state=State.SENT,
        sent_at=timezone.now(),
        next_attempt_at=None,
        last_error="",
    )


def outbound_retry(
    outbound_id: int,
    reason: str,
    delay: timedelta,
    leaving: Iterable[str] = (State.SENDING, State.UNKNOWN),
) -> OutboundMessage | None:
    """sending -> queued again after DELAY, for a transient failure (REASON is shown)."""
    return _transition(
        outbound_id,
        leaving,
        state=State.QUEUED,
        last_error=reason,
        next_attempt_at=timezone.now() + delay,
    )


def outbound_failed(
    outbound_id: int, reason: str, leaving: Iterable[str] = (State.SENDING, State.UNKNOWN)
) -> OutboundMessage | None:
    """sending -> failed for good, with a readable REASON."""
    return _transition(
        outbound_id, leaving, state=State.FAILED, last_error=reason, next_attempt_at=None
    )


def outbound_unknown(
    outbound_id: int, reason: str, check_at: datetime | None = None
) -> OutboundMessage | None:
    """sending -> unknown: the server may have the message; resolve before any resend."""
    return _transition(
        outbound_id,
        [State.SENDING],
        state=State.UNKNOWN,
        last_error=reason,
        next_attempt_at=check_at or timezone.now(),
    )


def outbound_postpone(
    outbound_id: int, until: datetime, reason: str | None = None
) -> OutboundMessage | None:
    """queued -> queued, due at UNTIL: a sending limit or its account made it wait (no attempt
    counted); REASON, when given, is shown as why it waits."""
    changes: dict[str, object] = {"next_attempt_at": until}
    if reason is not None:
        changes["last_error"] = reason
    return _transition(outbound_id, [State.QUEUED], **changes)


def outbound_check_later(outbound_id: int, check_at: datetime) -> OutboundMessage | None:
    """unknown -> unknown, looked for again at CHECK_AT (the Sent folder could not be read)."""
    return _transition(outbound_id, [State.UNKNOWN], next_attempt_at=check_at)


def recipients_update(outbound: OutboundMessage, outcomes: dict[str, dict[str, object]]) -> None:
    """Per-recipient fields by address (e.g. {"a@x": {"status": "rejected", "smtp_code": 550}}),
    with an "outbound" update event."""
    with transaction.atomic():
        for address, fields in outcomes.items():
            OutboundRecipient.objects.filter(outbound=outbound, address=address).update(**fields)
        events_record(outbound.account, "outbound", "updated", [outbound.pk])


# Bursts: one account's messages changed together, one transaction and one event each -------
def _bulk_transition(
    outbounds: Sequence[OutboundMessage],
    leaving: str,
    *,
    skip_locked: bool = False,
    due_by: datetime | None = None,
    before: Callable[[list[int]], None] | None = None,
    counted: int = 0,
    **changes: object,
) -> list[OutboundMessage]:
    """`_transition` for many messages of one account, loaded (with their account) by the
    caller: those in state LEAVING (and due by DUE_BY) are locked in id order, BEFORE(ids)
    runs, CHANGES are made (attempts += COUNTED) in the rows and in the objects; the moved
    ones."""
    by_id = {o.pk: o for o in outbounds}
    lookups: dict[str, object] = {"pk__in": list(by_id), "state": leaving}
    if due_by is not None:
        lookups["next_attempt_at__lte"] = due_by
    with transaction.atomic(savepoint=False):
        locked = list(
            OutboundMessage.objects.select_for_update(of=("self",), skip_locked=skip_locked)
            .filter(**lookups)
            .order_by("pk")
            .values_list("pk", "attempts")
        )
        if not locked:
            return []
        ids = [pk for pk, _ in locked]
        if before is not None:
            before(ids)
        now = timezone.now()
        update = {**changes, "updated_at": now}
        if counted:
            update["attempts"] = F("attempts") + counted
        OutboundMessage.objects.filter(pk__in=ids).update(**update)
        moved = []
        for pk, attempts in locked:
            outbound = by_id[pk]
            for name, value in changes.items():
                setattr(outbound, name, value)
            outbound.updated_at, outbound.attempts = now, attempts + counted
            moved.append(outbound)
        events_record(moved[0].account, "outbound", "updated", ids)
    return moved


def outbound_claim_many(outbounds: Sequence[OutboundMessage]) -> list[OutboundMessage]:
    """`outbound_claim` for many messages at once; rows another worker holds are skipped."""
    now = timezone.now()
    return _bulk_transition(
        outbounds,
        State.QUEUED,
        skip_locked=True,
        due_by=now,
        counted=1,
        state=State.SENDING,
        sending_at=now,
    )


def outbound_sent_many(
    outbounds: Sequence[OutboundMessage], accepted: dict[int, list[tuple[str, int, str]]]
) -> list[OutboundMessage]:
    """sending -> sent for many messages, with their recipients' acceptance (ACCEPTED: by
    outbound id, each recipient's (address, code, reply)) in the same transaction."""

    def recipients_accept(ids: list[int]) -> None:
        rows = [(pk, a, code, reply[:2000]) for pk in ids for a, code, reply in accepted[pk]]
        if rows:
            with connection.cursor() as cursor:
                cursor.execute(_RECIPIENTS_ACCEPT, [list(c) for c in zip(*rows, strict=True)])

    return _bulk_transition(
        outbounds,
        State.SENDING,
        before=recipients_accept,
        state=State.SENT,
        sent_at=timezone.now(),
        next_attempt_at=None,
        last_error="",
    )


def outbound_release_many(
    outbounds: Sequence[OutboundMessage], until: datetime, reason: str
) -> list[OutboundMessage]:
    """sending -> queued, due at UNTIL, for claimed messages whose attempt never began (their
    burst stopped before them): the attempt is not counted; REASON is shown."""
    return _bulk_transition(
        outbounds,
        State.SENDING,
        counted=-1,
        state=State.QUEUED,
        next_attempt_at=until,
        last_error=reason,
    )


def outbound_postpone_many(
    outbounds: Sequence[OutboundMessage], until: datetime, reason: str | None = None
) -> list[OutboundMessage]:
    """`outbound_postpone` for many messages at once."""
    changes: dict[str, object] = {"next_attempt_at": until}
    if reason is not None:
        changes["last_error"] = reason
    return _bulk_transition(outbounds, State.QUEUED, **changes)


_RECIPIENTS_ACCEPT = f"""
    UPDATE {OutboundRecipient._meta.db_table} AS r
       SET status = '{OutboundRecipient.Status.ACCEPTED}', smtp_code = v.code,
           smtp_reply = v.reply
      FROM unnest(%s::bigint[], %s::varchar[], %s::int[], %s::text[])
           AS v(outbound_id, address, code, reply)
     WHERE r.outbound_id = v.outbound_id AND r.address = v.address
"""
