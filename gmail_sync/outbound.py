"""The Gmail sender of outbound messages (the `OutboundSender` of messages.outbox_delivery):
users.messages.send with the bytes the outbox built, in the replied message's Gmail thread.

Errors by what they say of the message: a rate limit (429, rate-limit 403) means Gmail did
nothing -> transient; a server error or a cut connection after the request went out means Gmail
may have sent it -> unknown (resolved by searching `rfc822msgid:` before any resend); a refused
authorization -> the account is marked; any other refusal (400) -> permanent.

Gmail sends to the To, Cc and Bcc header fields of the message (there is no envelope), so Bcc
recipients are put in a Bcc field of the bytes sent (Gmail removes it from what it delivers and
keeps it only in the sender's copy). Gmail files the sent message itself (label SENT): the copy
is fetched back and stored through the pipeline (gmail_sync.send.store_sent).
"""

from __future__ import annotations

import email.policy
import logging
from collections.abc import Callable
from email.parser import BytesHeaderParser

from messages.models import Account, Message, OutboundMessage
from messages.outbox_delivery import (
    RecipientResult,
    SendAuthFailed,
    SendError,
    SendPermanent,
    SendTransient,
    SendUnknown,
)

from .client import GmailAuthError, GmailClient, GmailError, GmailUnavailable, rate_limited
from .connection import gmail_client_for
from .send import gmail_thread_of, store_sent

logger = logging.getLogger(__name__)


class GmailOutboundSender:
    def __init__(
        self,
        account: Account,
        *,
        client_factory: Callable[[Account], GmailClient] = gmail_client_for,
    ) -> None:
        self.account = account
        self.client_factory = client_factory
        self._client: GmailClient | None = None
        self._sent_ids: dict[int, str] = {}  # Gmail's id of what this sender sent, by outbound

    @property
    def client(self) -> GmailClient:
        if self._client is None:
            try:
                self._client = self.client_factory(self.account)
            except GmailError as exc:
                raise _error(exc, sent=False) from exc
        return self._client

    def send(self, outbound: OutboundMessage, recipients: list[str]) -> list[RecipientResult]:
        raw = with_bcc(bytes(outbound.raw), _bcc(outbound, recipients))
        try:
            thread_id = None
            reply_to = outbound.reply_to_message
            if reply_to is not None and reply_to.account_id == self.account.pk:
                thread_id = gmail_thread_of(self.client, reply_to)
        except GmailError as exc:
            raise _error(exc, sent=False) from exc
        try:
            sent = self.client.send(raw, thread_id=thread_id)
        except GmailError as exc:
            raise _error(exc, sent=True) from exc
        self._sent_ids[outbound.pk] = sent["id"]
        return [RecipientResult(a, True, 250, "accepted by Gmail") for a in recipients]

    def find_sent(self, outbound: OutboundMessage) -> bool | None:
        try:
            return self._search(outbound) is not None
        except GmailAuthError as exc:
            raise SendAuthFailed(exc.message) from exc
        except GmailError as exc:
            logger.info("outbound %s: Gmail cannot be searched now: %s", outbound.pk, exc)
            return None

    def after_sent(self, outbound: OutboundMessage, *, found: bool) -> Message | None:
        gmail_id = self._sent_ids.pop(outbound.pk, None) or self._search(outbound)
        if gmail_id is None:
            return None
        return store_sent(self.account, self.client, gmail_id)

    def _search(self, outbound: OutboundMessage) -> str | None:
        """Gmail's id of the message with OUTBOUND's Message-ID, sent or anywhere else."""
        message_id = outbound.message_id_header.strip().strip("<>")
        page = self.client.list_messages(
            q=f"rfc822msgid:{message_id}", include_spam_trash=True, max_results=10
        )
        return page.messages[0]["id"] if page.messages else None


def _bcc(outbound: OutboundMessage, recipients: list[str]) -> list[str]:
    listed = {r.get("address", "").lower() for r in (*outbound.to, *outbound.cc)}
    return [a for a in recipients if a.lower() not in listed]


def with_bcc(raw: bytes, addresses: list[str]) -> bytes:
    """RAW with a Bcc field naming ADDRESSES, put before the other fields (the bytes of the
    rest are kept as built); RAW itself when there are none or it has a Bcc field already."""
    if not addresses:
        return raw
    headers = BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
    if headers.get("Bcc"):
        return raw
    newline = b"\r\n" if b"\r\n" in raw[:2000] else b"\n"
    return b"Bcc: " + ", ".join(addresses).encode("utf-8") + newline + raw


def _error(exc: GmailError, *, sent: bool) -> SendError:
    if isinstance(exc, GmailAuthError):
        return SendAuthFailed(exc.message)
    if isinstance(exc, GmailUnavailable):
        if sent and not rate_limited(exc):
            return SendUnknown(f"Gmail may have sent it: {exc.message}")
        return SendTransient(exc.message)
    return SendPermanent(exc.message)
