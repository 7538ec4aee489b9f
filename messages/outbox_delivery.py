"""Delivering one outbound message through its provider's sender (SMTP, Gmail): the generic step
every provider's send task runs (`outbound_deliver`).

One run: resolve an `unknown` message first; else wait for a sending slot (outbox_limits: the
wait is no attempt, and the message is dispatched again for when a slot frees); claim it
(queued -> sending, one attempt); send to the recipients still pending; record each
recipient's answer; then one transition:
- every recipient answered: sent (some refused for good are `rejected` with the server's code
  and reply; the message fails only when none was accepted);
- some refused for now (4xx at RCPT): queued again for those only (the accepted ones are not
  sent twice), with backoff;
- a transient failure before the server took the message (refused connection, timeout, 4xx):
  queued again after OUTBOUND_RETRY_BASE_SECONDS doubling up to OUTBOUND_RETRY_MAX_SECONDS,
  with jitter (x0.5-1.0), until OUTBOUND_MAX_ATTEMPTS attempts: then failed;
- a permanent failure (5xx): failed at once with the reason;
- the login refused: the account is marked (like a refused IMAP login) and the message waits
  for it, as every queued message of an account that cannot send does (see below);
- the outcome unknown (the message data went out but no final answer came): `unknown`.

An account that cannot send (its login refused: auth_error; paused by its owner) holds its
queued messages instead of failing them: each is looked at again after a quarter of the time
it has waited (1 to 15 minutes), with the reason shown ("Waiting for the account: ..."), and
comes due at once when the account is active again (`outbox_dispatch.outbox_wake`). After
OUTBOUND_ACCOUNT_WAIT_GIVE_UP_SECONDS (3 days) of waiting it fails with that reason.

No silent second copy. The Message-ID is fixed when the message is created, so the sender can
look for it (`find_sent`: the account's Sent folder over IMAP, Gmail's rfc822msgid: search).
An `unknown` message (a cut after DATA, or a worker that died while sending: the outbox's beat
sweeper makes `unknown` a message left `sending` past its timeout) is never sent again before
it is looked for:
- found: the server took it -> sent (pending recipients accepted), its copy stored;
- proven absent: it never reached the server -> queued again (attempts go on counting);
- cannot tell (Sent unreadable now, or the sender says its evidence is ambiguous): looked for
  again every OUTBOUND_UNKNOWN_CHECK_SECONDS, and after OUTBOUND_UNKNOWN_GIVE_UP_SECONDS since
  the attempt began, failed with a reason that says it may have been sent: a human decides,
  the platform never resends blindly.
What "found" and "absent" prove is the sender's to guarantee (smtp_sync.outbound explains how
the SMTP sender makes absence a proof).

Retries and waits go through `messages.outbox.outbox_dispatch`, like scheduled sending and the
sweeper, so there is one path to the send task.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from django.conf import settings
from django.utils import timezone

from .account_status import account_mark_error
from .models import Account, Message, OutboundMessage, OutboundRecipient
from .outbox import outbox_dispatch
from .outbox_dispatch import ACCOUNT_WAIT_PREFIX
from .outbox_limits import send_slot_give_back, send_slot_take
from .outbox_states import (
    outbound_check_later,
    outbound_claim,
    outbound_failed,
    outbound_postpone,
    outbound_retry,
    outbound_sent,
    outbound_unknown,
    recipients_update,
)

logger = logging.getLogger(__name__)

State = OutboundMessage.State
Status = OutboundRecipient.Status
ACCOUNT_WAIT_MIN = timedelta(minutes=1)
ACCOUNT_WAIT_MAX = timedelta(minutes=15)


class SendError(Exception):
    """A send that did not go as asked; `reason` is readable by the account's owner, `results`
    the recipients' answers when the server gave them (every one refused)."""

    def __init__(self, reason: str, results: list[RecipientResult] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.results = results or []


class SendTransient(SendError):
    """Nothing was sent and trying later may work (refused connection, timeout, 4xx)."""


class SendPermanent(SendError):
    """Refused for good (5xx): trying again will not help."""


class SendAuthFailed(SendPermanent):
    """The server refused the account's credentials."""


class SendUnknown(SendError):
    """The message went out but the server's final answer never came: it may be delivered."""


@dataclass(frozen=True)
class RecipientResult:
    address: str
    accepted: bool
    code: int
    reply: str

    @property
    def temporary(self) -> bool:
        return not self.accepted and 400 <= self.code < 500


class OutboundSender(Protocol):
    """What a provider implements to send outbound messages."""

    def send(self, outbound: OutboundMessage, recipients: list[str]) -> list[RecipientResult]:
        """Send OUTBOUND's bytes to RECIPIENTS; raise a SendError when not every recipient got
        an answer."""
        ...

    def find_sent(self, outbound: OutboundMessage) -> bool | None:
        """Whether the provider has the message (True), proves it has not (False), or cannot
        tell now (None)."""
        ...

    def after_sent(self, outbound: OutboundMessage, *, found: bool) -> Message | None:
        """Put the copy in Sent (unless FOUND there already) and store it; the stored one."""
        ...


def outbound_deliver(outbound_id: int, sender: OutboundSender) -> dict:
    """One delivery step of an outbound message (see the module's docstring)."""
    outbound = OutboundMessage.objects.select_related("account").filter(pk=outbound_id).first()
    if outbound is None:
        return {"skipped": "gone"}
    if outbound.state == State.UNKNOWN:
        return _resolve_unknown(outbound, sender)
    if outbound.state != State.QUEUED:
        return {"skipped": outbound.state}
    now = timezone.now()
    if outbound.next_attempt_at and outbound.next_attempt_at > now:
        return {"skipped": "not due"}
    blocked = _account_blocks(outbound.account)
    if blocked:
        return _wait_for_account(outbound, blocked, now)
    slot = send_slot_take(outbound.account)
    if slot.wait > 0:
        waiting = outbound_postpone(outbound.pk, now + timedelta(seconds=slot.wait))
        if waiting is not None:
            outbox_dispatch(waiting)
        return {"waiting": slot.wait}
    claimed = outbound_claim(outbound.pk)
    if claimed is None:
        send_slot_give_back(outbound.account, slot)
        return {"skipped": "claimed elsewhere"}
    return _send(claimed, sender)


def _account_blocks(account: Account) -> str:
    """Why ACCOUNT cannot send now ("" when it can)."""
    if account.status == Account.Status.PAUSED:
        return "it is paused; resume it to send"
    if account.status == Account.Status.AUTH_ERROR:
        why = f" ({account.last_error})" if account.last_error else ""
        return f"its login is refused{why}; reconnect it or fix its password"
    return ""


def account_wait_delay(waited: timedelta) -> timedelta:
    """When a message held by its account is looked at again: a quarter of the time it has
    waited, 1 to 15 minutes (the account's return also wakes it at once)."""
    return min(ACCOUNT_WAIT_MAX, max(ACCOUNT_WAIT_MIN, waited / 4))


def _wait_for_account(outbound: OutboundMessage, blocked: str, now: datetime) -> dict:
    waited = now - (outbound.queued_at or outbound.created_at)
    give_up = timedelta(seconds=settings.OUTBOUND_ACCOUNT_WAIT_GIVE_UP_SECONDS)
    if waited >= give_up:
        reason = f"not sent: the account could not send for {give_up}: {blocked}"
        outbound_failed(outbound.pk, reason, leaving=[State.QUEUED])
        return {"failed": reason}
    later = outbound_postpone(
        outbound.pk, now + account_wait_delay(waited), reason=ACCOUNT_WAIT_PREFIX + blocked
    )
    if later is not None:
        outbox_dispatch(later)
    return {"waiting for the account": blocked}


def _send(outbound: OutboundMessage, sender: OutboundSender) -> dict:
    recipients = outbound_pending_recipients(outbound)
    try:
        results = sender.send(outbound, recipients)
    except SendError as exc:
        if exc.results:
            recipients_record(outbound, exc.results)
        return outbound_failure(outbound, sender, exc)
    return outbound_record(outbound, sender, results)


def outbound_failure(outbound: OutboundMessage, sender: OutboundSender, error: SendError) -> dict:
    """The state a failed attempt leaves (retry, unknown, waiting for the account, failed)."""
    if isinstance(error, SendTransient):
        return _retry_or_fail(outbound, error.reason, sender)
    if isinstance(error, SendUnknown):
        check_at = timezone.now() + timedelta(seconds=settings.OUTBOUND_UNKNOWN_CHECK_SECONDS)
        unknown = outbound_unknown(outbound.pk, error.reason, check_at=check_at)
        if unknown is not None:
            outbox_dispatch(unknown)
        return {"unknown": error.reason}
    if isinstance(error, SendAuthFailed):
        account_mark_error(outbound.account, error.reason, auth=True)
        held = outbound_retry(outbound.pk, ACCOUNT_WAIT_PREFIX + error.reason, ACCOUNT_WAIT_MIN)
        if held is not None:
            outbox_dispatch(held)
        return {"waiting for the account": error.reason}
    outbound_failed(outbound.pk, error.reason)
    return {"failed": error.reason}


def outbound_pending_recipients(outbound: OutboundMessage) -> list[str]:
    """The envelope recipients not answered for good yet (to, cc and bcc)."""
    pending = list(
        outbound.recipients.filter(status=Status.PENDING)
        .order_by("pk")
        .values_list("address", flat=True)
    )
    if pending or outbound.recipients.exists():
        return pending
    rows = [
        OutboundRecipient(outbound=outbound, kind=kind, name=r.get("name", ""), address=address)
        for kind, listed in (("to", outbound.to), ("cc", outbound.cc), ("bcc", outbound.bcc))
        for r in listed or []
        if (address := r.get("address"))
    ]
    OutboundRecipient.objects.bulk_create(rows, ignore_conflicts=True)
    return [row.address for row in rows]


def recipients_record(outbound: OutboundMessage, results: list[RecipientResult]) -> None:
    """Each recipient's answer: accepted, rejected for good, or still pending (refused for
    now), with the server's code and reply."""
    recipients_update(
        outbound,
        {
            r.address: {
                "status": Status.PENDING
                if r.temporary
                else (Status.ACCEPTED if r.accepted else Status.REJECTED),
                "smtp_code": r.code,
                "smtp_reply": r.reply[:2000],
            }
            for r in results
        },
    )


def outbound_record(
    outbound: OutboundMessage, sender: OutboundSender, results: list[RecipientResult]
) -> dict:
    recipients_record(outbound, results)
    later = [r for r in results if r.temporary]
    if later:
        refused = "; ".join(f"{r.address}: {r.code} {r.reply}" for r in later)
        return _retry_or_fail(outbound, f"refused for now: {refused}", sender)
    return _finish(outbound, sender, accepted=any(r.accepted for r in results))


def _finish(
    outbound: OutboundMessage,
    sender: OutboundSender,
    *,
    found: bool = False,
    accepted: bool = False,
) -> dict:
    """Sent when some recipient took it (ACCEPTED: one did in this attempt), else failed with
    the refusals."""
    if not accepted and not outbound.recipients.filter(status=Status.ACCEPTED).exists():
        refusals = "; ".join(
            f"{address}: {code} {reply}"
            for address, code, reply in outbound.recipients.values_list(
                "address", "smtp_code", "smtp_reply"
            )
        )
        outbound_failed(outbound.pk, f"every recipient was refused: {refusals}")
        return {"failed": "every recipient refused"}
    sent = outbound_sent(outbound.pk)
    if sent is None:
        return {"skipped": "no longer sending"}
    copy = None
    try:
        copy = sender.after_sent(sent, found=found)
    except Exception:  # the message is sent; a copy missing from Sent is no reason to fail it
        logger.exception("outbound %s: sent, but its copy could not be stored", outbound.pk)
    if copy is not None:
        OutboundMessage.objects.filter(pk=outbound.pk).update(sent_message=copy)
    return {"sent": outbound.pk, "copy": copy.pk if copy else None}


def _retry_or_fail(outbound: OutboundMessage, reason: str, sender: OutboundSender) -> dict:
    if outbound.attempts >= settings.OUTBOUND_MAX_ATTEMPTS:
        reason = f"gave up after {outbound.attempts} attempts: {reason}"
        later = outbound.recipients.filter(status=Status.PENDING)
        if outbound.recipients.filter(status=Status.ACCEPTED).exists():
            recipients_update(
                outbound,
                {a: {"status": Status.REJECTED} for a in later.values_list("address", flat=True)},
            )
            return _finish(outbound, sender)
        outbound_failed(outbound.pk, reason)
        return {"failed": reason}
    delay = retry_delay(outbound.attempts)
    retried = outbound_retry(outbound.pk, reason, delay)
    if retried is not None:
        outbox_dispatch(retried)
    return {"retry": reason, "in": delay.total_seconds()}


def retry_delay(attempts: int) -> timedelta:
    """Exponential backoff with jitter after ATTEMPTS attempts."""
    base = settings.OUTBOUND_RETRY_BASE_SECONDS * 2 ** max(0, attempts - 1)
    seconds = min(settings.OUTBOUND_RETRY_MAX_SECONDS, base) * random.uniform(0.5, 1.0)
    return timedelta(seconds=seconds)


def _resolve_unknown(outbound: OutboundMessage, sender: OutboundSender) -> dict:
    now = timezone.now()
    if outbound.next_attempt_at and outbound.next_attempt_at > now:
        return {"skipped": "not due"}
    try:
        found = sender.find_sent(outbound)
    except SendAuthFailed as exc:
        account_mark_error(outbound.account, exc.reason, auth=True)
        found = None
    except SendError as exc:
        logger.info("outbound %s: cannot look for it now: %s", outbound.pk, exc.reason)
        found = None
    if found:
        recipients_update(
            outbound,
            {
                address: {
                    "status": Status.ACCEPTED,
                    "smtp_reply": "(the answer was lost; the message was found as sent)",
                }
                for address in outbound.recipients.filter(status=Status.PENDING).values_list(
                    "address", flat=True
                )
            },
        )
        return {**_finish(outbound, sender, found=True), "resolved": "found"}
    if found is False:
        retried = outbound_retry(
            outbound.pk,
            f"not sent (looked for it after: {outbound.last_error})",
            timedelta(0),
            leaving=[State.UNKNOWN],
        )
        if retried is not None:
            outbox_dispatch(retried)
        return {"resolved": "absent"}
    started = outbound.sending_at or outbound.updated_at
    if now - started >= timedelta(seconds=settings.OUTBOUND_UNKNOWN_GIVE_UP_SECONDS):
        reason = (
            "the server may have accepted this message but that could not be confirmed "
            f"({outbound.last_error}); it was not sent again to avoid a duplicate: check the "
            "Sent folder or with the recipients before sending it again"
        )
        outbound_failed(outbound.pk, reason, leaving=[State.UNKNOWN])
        return {"failed": reason}
    check_at = now + timedelta(seconds=settings.OUTBOUND_UNKNOWN_CHECK_SECONDS)
    later = outbound_check_later(outbound.pk, check_at)
    if later is not None:
        outbox_dispatch(later)
    return {"unknown": "cannot tell yet"}
