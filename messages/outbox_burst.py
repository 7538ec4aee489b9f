"""Delivering a burst: the queued messages of one account that one send task carries
(messages.outbox_dispatch puts up to OUTBOX_BURST_MAX in a task), sent one after the other
over the sender's one connection, with their state changes made in bulk.

The rules are those of one message (messages.outbox_delivery); only the bookkeeping is
shared. In chunks of CHUNK messages:
- a sending slot per message (outbox_limits, the chunk's in one call); when a window is full,
  the chunk's rest and the burst's rest wait for the slot, as one message would (no attempt
  counted);
- the chunk is claimed at once (queued and due -> sending, one attempt each; rows another
  worker holds are left to it);
- each message is sent; the ones every recipient accepted go to `sent` together (recipients
  and state in one transaction), then their copies are stored together (`after_sent_many`
  when the sender has it). Any other outcome (some recipients refused, a failure) takes the
  one-message path for that message.
- a failure that will hit the next message as well (a transient failure before the server
  took anything: the server unreachable, busy, or the copy in Sent not writable; the login
  refused) stops the burst: the messages not tried yet wait as long as the one that failed,
  their attempt not counted.
A crash between the server's acceptance and the chunk's record leaves those messages
`sending`: the outbox's sweeper makes them `unknown` and the sender looks for them in Sent
before any resend, as for one message cut there (the window is one chunk instead of one
message).
Messages not queued and due (unknown ones to resolve, a cancel that won the race, a retry
not due yet) and an account that cannot send take the one-message path.

A sender may offer more than OutboundSender for bursts, each used when present: `held()` (a
context in which its sessions are kept for the burst), `before_sending(claimed)` (the chunk's
preparation, e.g. its copies in Sent at once) and `after_sent_many(sent)` (the copies stored
together).
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from django.utils import timezone

from .models import Account, Message, OutboundMessage, OutboundRecipient
from .outbox_delivery import (
    OutboundSender,
    RecipientResult,
    SendAuthFailed,
    SendError,
    SendTransient,
    outbound_deliver,
    outbound_failure,
    outbound_pending_recipients,
    outbound_record,
    recipients_record,
    retry_delay,
)
from .outbox_dispatch import outbox_dispatch_many
from .outbox_limits import SendLimits, send_slot_give_back, send_slots_take
from .outbox_states import (
    outbound_claim_many,
    outbound_postpone_many,
    outbound_release_many,
    outbound_sent_many,
)

logger = logging.getLogger(__name__)

State = OutboundMessage.State
CHUNK = 50

# (until, reason): the rest of a burst waits until then; reason None keeps their own.
Stop = tuple[datetime, str | None]


def outbound_send_task_run(
    outbound_id: int | list[int], sender_for: Callable[[Account], OutboundSender]
) -> dict:
    """A provider's send task: one message (an id) or a burst of one account's (a list of
    ids), sent by SENDER_FOR(account) (inside its `held()`, when it has one: a session kept
    for the burst)."""
    ids = outbound_id if isinstance(outbound_id, list) else [outbound_id]
    account = Account.objects.filter(outbound__pk__in=ids).distinct().first()
    if account is None:
        return {"skipped": "gone"}
    sender = sender_for(account)
    if len(ids) == 1:
        return outbound_deliver(ids[0], sender)
    held = getattr(sender, "held", None)
    with held() if held is not None else contextlib.nullcontext():
        return outbound_deliver_burst(ids, sender)


def outbound_deliver_burst(outbound_ids: Sequence[int], sender: OutboundSender) -> dict:
    """One delivery step of each of OUTBOUND_IDS (one account's); what happened, counted."""
    now = timezone.now()
    rows = list(
        OutboundMessage.objects.select_related("account")
        .filter(pk__in=list(outbound_ids))
        .order_by("pk")
    )
    if not rows:
        return {"skipped": len(outbound_ids)}
    account = rows[0].account
    ready = [
        o
        for o in rows
        if account.status == Account.Status.ACTIVE
        and o.account_id == account.pk
        and o.state == State.QUEUED
        and (o.next_attempt_at is None or o.next_attempt_at <= now)
    ]
    outcome: Counter[str] = Counter()
    ready_ids = {o.pk for o in ready}
    for outbound in rows:
        if outbound.pk not in ready_ids:
            outcome.update(outbound_deliver(outbound.pk, sender).keys())
    limits = SendLimits.of(account)
    while ready:
        chunk, ready = ready[:CHUNK], ready[CHUNK:]
        stop = _chunk_deliver(account, chunk, sender, limits, outcome)
        if stop is not None:
            outbox_dispatch_many(outbound_postpone_many(ready, *stop))
            outcome["waiting"] += len(ready)
            break
    return {what: count for what, count in outcome.items() if count}


def _chunk_deliver(
    account: Account,
    chunk: list[OutboundMessage],
    sender: OutboundSender,
    limits: SendLimits,
    outcome: Counter[str],
) -> Stop | None:
    """Deliver CHUNK (see the module's docstring); a Stop when the burst's rest must wait."""
    stop: Stop | None = None
    slots, wait = send_slots_take(account, len(chunk), limits)
    if len(slots) < len(chunk):
        stop = (timezone.now() + timedelta(seconds=wait), None)
        outbox_dispatch_many(outbound_postpone_many(chunk[len(slots) :], *stop))
        outcome["waiting"] += len(chunk) - len(slots)
        chunk = chunk[: len(slots)]
    claimed = outbound_claim_many(chunk)
    send_slot_give_back(account, *slots[len(claimed) :])
    outcome["skipped"] += len(chunk) - len(claimed)
    pending = _pending_by_outbound(claimed)
    prepare = getattr(sender, "before_sending", None)
    if prepare is not None and claimed:
        prepare(claimed)
    accepted: dict[int, list[RecipientResult]] = {}
    for index, outbound in enumerate(claimed):
        try:
            results = sender.send(outbound, pending[outbound.pk])
        except SendError as exc:
            if exc.results:
                recipients_record(outbound, exc.results)
            outcome.update(outbound_failure(outbound, sender, exc).keys())
            if _stops_burst(exc):
                stop = _waits_like(outbound)
                rest = claimed[index + 1 :]
                outbox_dispatch_many(outbound_release_many(rest, *stop))
                outcome["waiting"] += len(rest)
                break
            continue
        if results and all(r.accepted for r in results):
            accepted[outbound.pk] = results
        else:
            outcome.update(outbound_record(outbound, sender, results).keys())
    outcome["sent"] += _sent_record([o for o in claimed if o.pk in accepted], accepted, sender)
    return stop


def _stops_burst(error: SendError) -> bool:
    """Whether ERROR will hit the next message as well (see the module's docstring)."""
    return isinstance(error, SendAuthFailed) or (
        isinstance(error, SendTransient) and not error.results
    )


def _waits_like(outbound: OutboundMessage) -> tuple[datetime, str]:
    """When the rest of a burst OUTBOUND stopped comes due, and why."""
    due, reason = OutboundMessage.objects.filter(pk=outbound.pk).values_list(
        "next_attempt_at", "last_error"
    )[0]
    if due is None:  # it failed for good; the others still have their attempts
        due = timezone.now() + retry_delay(1)
    return due, f"Not tried yet: the message before it failed: {reason}"


def _pending_by_outbound(claimed: list[OutboundMessage]) -> dict[int, list[str]]:
    """The envelope recipients still pending, by outbound id (`outbound_pending_recipients`
    in one query)."""
    pending: dict[int, list[str]] = defaultdict(list)
    listed: set[int] = set()
    for outbound_id, address, status in (
        OutboundRecipient.objects.filter(outbound__in=claimed)
        .order_by("pk")
        .values_list("outbound_id", "address", "status")
    ):
        listed.add(outbound_id)
        if status == OutboundRecipient.Status.PENDING:
            pending[outbound_id].append(address)
    for outbound in claimed:
        if outbound.pk not in listed:
            pending[outbound.pk] = outbound_pending_recipients(outbound)
    return pending


def _sent_record(
    outbounds: list[OutboundMessage],
    accepted: dict[int, list[RecipientResult]],
    sender: OutboundSender,
) -> int:
    """OUTBOUNDS (every recipient took them: ACCEPTED) -> sent together, then their copies
    stored; how many moved."""
    if not outbounds:
        return 0
    sent = outbound_sent_many(
        outbounds,
        {pk: [(r.address, r.code, r.reply) for r in results] for pk, results in accepted.items()},
    )
    copies = _copies_store(sent, sender)
    for outbound in sent:
        outbound.sent_message = copies.get(outbound.pk)
    OutboundMessage.objects.bulk_update([o for o in sent if o.pk in copies], ["sent_message"])
    return len(sent)


def _copies_store(sent: list[OutboundMessage], sender: OutboundSender) -> dict[int, Message]:
    """The stored copies of SENT by outbound id (`after_sent_many` when the sender has it)."""
    try:
        many = getattr(sender, "after_sent_many", None)
        if many is not None:
            copies = many(sent)
        else:
            copies = {o.pk: sender.after_sent(o, found=False) for o in sent}
    except Exception:  # they are sent; a copy missing from Sent is no reason to fail them
        logger.exception("outbound %s: sent, but the copies could not be stored", sent[0].pk)
        return {}
    return {pk: copy for pk, copy in copies.items() if copy is not None}
