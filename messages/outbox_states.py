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

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db import transaction
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


def outbound_queue(
    outbound_id: int, raw: bytes, send_at: datetime | None = None
) -> OutboundMessage | None:
    """draft -> queued with its MIME bytes fixed; due at SEND_AT (now when None)."""
    now = timezone.now()
    return _transition(
        outbound_id,
        [State.DRAFT],
        state=State.QUEUED,
        raw=raw,
        size=len(raw),
        send_at=send_at,
        queued_at=now,
        next_attempt_at=send_at or now,
        last_error="",
    )


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
