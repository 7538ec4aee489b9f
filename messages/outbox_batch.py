"""Composing many outbound messages in one call, all or nothing; and the write path every
compose takes (a single compose is a batch of one).

Each input is checked and built exactly as a single compose (messages.outbox.outbound_composed:
the same checks, the same MIME builder), the objects the inputs name looked up once for all of
them (messages.outbox.Owned). Then, in one transaction and a constant number of statements: the
outbound rows (Message-ID and ENVID fixed; queued ones with their MIME bytes and due time), their
recipients and forwarded attachments, the change events of all of them, and the send tasks of
the queued ones (messages.outbox_dispatch.outbox_dispatch_many, after the commit).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from django.db import transaction
from django.utils import timezone

from .bulk_insert import bulk_insert
from .events import events_record_accounts
from .models import OutboundAttachment, OutboundMessage
from .outbox import Composed, OutboxRefused, Owned, outbound_composed
from .outbox_dispatch import outbox_dispatch_many
from .selectors import User

__all__ = ["outbound_create_many", "outbound_store"]


def outbound_create_many(*, user: User, items: Sequence[dict[str, Any]]) -> list[OutboundMessage]:
    """New outbound messages from ITEMS (each the API's validated compose input), in their
    order; refused as a whole (nothing stored or queued) when one item is: the OutboxRefused
    names the item's index in its field (`messages.3.to.0.address`)."""
    owned = Owned.load(user, items)
    now = timezone.now()
    composed = []
    for index, data in enumerate(items):
        try:
            composed.append(outbound_composed(data, owned, now=now))
        except OutboxRefused as exc:
            item = f"messages.{index}"
            raise OutboxRefused(
                exc.message,
                code=exc.code,
                status=exc.status,
                field=f"{item}.{exc.field}" if exc.field else item,
            ) from None
    return outbound_store(composed)


def outbound_store(composed: Sequence[Composed]) -> list[OutboundMessage]:
    """Store COMPOSED (one owner's) in one transaction, record their events (`created`, and
    `updated` for the queued: the events of a compose then a send) and enqueue the queued ones'
    send tasks once it commits."""
    outbounds = [c.outbound for c in composed]
    if not outbounds:
        return []
    with transaction.atomic():
        bulk_insert(outbounds)
        bulk_insert([recipient for c in composed for recipient in c.recipients])
        attachments = [attachment for c in composed for attachment in c.attachments]
        if attachments:
            OutboundAttachment.objects.bulk_create(attachments)
        queued = [c.outbound for c in composed if c.queued]
        created: dict[int, list[int]] = defaultdict(list)
        updated: dict[int, list[int]] = defaultdict(list)
        for outbound in outbounds:
            created[outbound.account_id].append(outbound.pk)
        for outbound in queued:
            updated[outbound.account_id].append(outbound.pk)
        events_record_accounts(
            outbounds[0].account.owner_id,
            [(account, "outbound", "created", ids) for account, ids in created.items()]
            + [(account, "outbound", "updated", ids) for account, ids in updated.items()],
        )
        outbox_dispatch_many(queued)
    return outbounds
