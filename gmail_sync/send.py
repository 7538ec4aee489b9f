"""Sending through the Gmail API (users.messages.send), the sent message stored at once.

A reply names the message it answers (In-Reply-To, References, "Re: " subject) and asks for
that message's Gmail thread: Gmail threads it only when the headers and subject agree too.
The sent message is fetched back (format raw: Gmail adds Message-ID, Date, From, and the SENT
label) and stored through the same pipeline as synced mail, so it shows in its thread before
the next history sync, which then finds it stored.

Sending is not idempotent: nothing here sends twice. If the send went through but fetching or
storing the copy fails, the copy is left to the next sync.
"""

from __future__ import annotations

import base64
import email
import email.policy
import logging
from collections.abc import Callable

from django.db import transaction
from django.utils import timezone

from emailplatform import topics
from messages.batches import BatchPublisher
from messages.models import Account, Message
from messages.outbox_checks import one_line
from messages.outbox_mime import reply_references, reply_subject

from . import ids
from .client import GmailClient, GmailError
from .connection import gmail_client_for
from .labels import account_label_map, message_item

logger = logging.getLogger(__name__)

SEND_TASK = "gmail_sync.send_message"


def gmail_send_request(account: Account, raw: bytes, *, reply_to: Message | None = None) -> None:
    """Send RAW from ACCOUNT in the background (the `gmail_sync.send_message` task, after the
    current transaction commits)."""
    from emailplatform.celery import app

    args = [account.pk, base64.b64encode(raw).decode("ascii"), reply_to.pk if reply_to else None]
    transaction.on_commit(lambda: app.send_task(SEND_TASK, args=args, queue=topics.QUEUE_GMAIL))


def reply_headers(raw: bytes, reply_to: Message) -> bytes:
    """RAW with In-Reply-To, References and a "Re: " subject that answer REPLY_TO."""
    mail = email.message_from_bytes(raw, policy=email.policy.compat32)
    parent, references = reply_references(reply_to.message_id_header, reply_to.references or [])
    if parent:
        del mail["In-Reply-To"], mail["References"]
        mail["In-Reply-To"] = parent
        mail["References"] = " ".join(references)
    subject = str(mail.get("Subject") or "").strip() or one_line(reply_to.subject)
    del mail["Subject"]
    mail["Subject"] = reply_subject(subject)
    return mail.as_bytes(policy=email.policy.compat32)


def _thread_of(client: GmailClient, message: Message) -> str:
    stored = message.thread.provider_thread_id or ""
    if stored.startswith(ids.PREFIX):
        return ids.api_id(stored)
    return client.get_message(ids.api_id(message.provider_id), fmt="minimal")["threadId"]


def gmail_send(
    account: Account,
    raw: bytes,
    *,
    reply_to: Message | None = None,
    client_factory: Callable[[Account], GmailClient] = gmail_client_for,
) -> tuple[str, Message | None]:
    """Send RAW from ACCOUNT (a reply when REPLY_TO is given); returns Gmail's id of the sent
    message and its stored copy (None when storing it failed: the next sync brings it).
    Raises the GmailClient's errors when the send itself failed."""
    client = client_factory(account)
    thread_id = None
    if reply_to is not None:
        raw = reply_headers(raw, reply_to)
        thread_id = _thread_of(client, reply_to)
    sent = client.send(raw, thread_id=thread_id)
    try:
        return sent["id"], store_sent(account, client, sent["id"])
    except GmailError as exc:
        logger.warning("account %s: sent %s, not stored yet (%s)", account.pk, sent["id"], exc)
        return sent["id"], None


def store_sent(account: Account, client: GmailClient, gmail_id: str) -> Message:
    """Fetch the sent message (format raw) and store it as a sync would."""
    fetched_at = timezone.now()
    resource = client.get_message(gmail_id, fmt="raw")
    labels = list(resource.get("labelIds") or [])
    label_map = account_label_map(account)
    provider_id = ids.store_id(resource["id"])
    publisher = BatchPublisher(account.pk, account.provider, inline=True)
    publisher.publish(
        [message_item(resource, label_map.folders(labels) or ["SENT"])],
        fetched_at=fetched_at,
        provider_ids=[provider_id],
    )
    publisher.drain()
    return Message.objects.get(account=account, provider_id=provider_id)
