"""What sending through the Gmail API needs besides the send itself (gmail_sync.outbound):
the Gmail thread a reply joins (Gmail threads it only when the headers and subject agree too),
and the sent message fetched back (format raw: Gmail adds the SENT label) and stored through
the same pipeline as synced mail, so it shows in its thread before the next history sync,
which then finds it stored."""

from __future__ import annotations

from django.utils import timezone

from messages.batches import BatchPublisher
from messages.models import Account, Message

from . import ids
from .client import GmailClient
from .labels import account_label_map, message_item


def gmail_thread_of(client: GmailClient, message: Message) -> str:
    """The Gmail thread id of a stored message."""
    stored = message.thread.provider_thread_id or ""
    if stored.startswith(ids.PREFIX):
        return ids.api_id(stored)
    return client.get_message(ids.api_id(message.provider_id), fmt="minimal")["threadId"]


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
