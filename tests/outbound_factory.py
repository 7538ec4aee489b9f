"""Outbound messages for the delivery tests, composed and queued through the outbox's service
(messages.outbox: its MIME builder, its dispatcher). The send task it enqueues is taken off the
provider's queue here: each test runs the delivery itself."""

from __future__ import annotations

from emailplatform import topics
from messages.models import Account, Message, OutboundMessage, OutboundRecipient
from messages.outbox import outbound_create as outbox_create
from messages.outbox import outbound_send
from tests.messages.api.conftest import queued


def outbound_create(
    account: Account,
    *,
    to: list[str],
    cc: list[str] = (),  # type: ignore[assignment]
    bcc: list[str] = (),  # type: ignore[assignment]
    subject: str = "Hello",
    body: str = "Hi there.\n",
    reply_to: Message | None = None,
    notify_success: bool = False,
) -> OutboundMessage:
    data = {
        "account": account.pk,
        "to": [{"address": a} for a in to],
        "cc": [{"address": a} for a in cc],
        "bcc": [{"address": a} for a in bcc],
        "subject": subject,
        "text": body,
        "notify_success": notify_success,
    }
    if reply_to is not None:
        data["reply_to_message"] = reply_to.pk
    draft = outbox_create(user=account.owner, data=data)
    outbound = outbound_send(outbound=draft)
    task = topics.OUTBOUND_SEND_TASKS[account.provider]
    dispatched = queued(topics.PROVIDER_QUEUES[account.provider])
    assert (task, [outbound.pk]) in dispatched, dispatched
    return outbound


def recipients_of(outbound: OutboundMessage) -> dict[str, tuple[str, int | None, str]]:
    """{address: (status, smtp_code, smtp_reply)}."""
    return {
        r.address: (r.status, r.smtp_code, r.smtp_reply)
        for r in OutboundRecipient.objects.filter(outbound=outbound)
    }
