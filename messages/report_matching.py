"""Delivery reports found in incoming mail: matched to what the owner sent, and recorded.

A report is matched, within the receiving account owner's outbound messages only, by its
Original-Envelope-Id (our ENVID), else by the Message-ID of the message it returns, else by
its own In-Reply-To. Every report becomes a `DeliveryReport` (one per received message, so a
report stored twice records once); a matched one updates its recipients' status through
`outbox_states.recipients_update`, which records the "outbound" change event.

A later report never takes a recipient back: "delayed" does not overwrite a final status
(bounced, delivered, relayed, expanded).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from .delivery_reports import ParsedReport, ReportedRecipient
from .models import Account, DeliveryReport, Message, OutboundMessage, OutboundRecipient
from .outbox_states import recipients_update

logger = logging.getLogger(__name__)

Status = OutboundRecipient.Status
ACTION_STATUS = {
    "failed": Status.BOUNCED,
    "delayed": Status.DELAYED,
    "delivered": Status.DELIVERED,
    "relayed": Status.RELAYED,
    "expanded": Status.EXPANDED,
}
FINAL_STATUSES = frozenset({Status.BOUNCED, Status.DELIVERED, Status.RELAYED, Status.EXPANDED})


def delivery_reports_record(
    account: Account, found: Sequence[tuple[Message, ParsedReport]]
) -> list[DeliveryReport]:
    """Record the reports FOUND in ACCOUNT's newly stored messages (inside their transaction)."""
    return [_record(account, message, report) for message, report in found]


def _record(account: Account, message: Message, report: ParsedReport) -> DeliveryReport:
    outbound, matched_by = outbound_for_report(account, report, message.in_reply_to)
    applied: dict[int, str] = {}
    if outbound is not None:
        applied = _apply(outbound, message, report.recipients)
    return DeliveryReport.objects.create(
        message=message,
        kind=report.kind,
        outbound=outbound,
        matched_by=matched_by,
        recipients=[
            {**r.as_json(), "recipient": applied.get(i)} for i, r in enumerate(report.recipients)
        ],
        envelope_id=report.envelope_id,
        original_message_id=report.original_message_id[:998],
        reporting_mta=report.reporting_mta,
        defects=report.defects,
    )


def outbound_for_report(
    account: Account, report: ParsedReport, in_reply_to: str = ""
) -> tuple[OutboundMessage | None, str]:
    """The outbound message of ACCOUNT's owner the report is about, and the key that found it."""
    mine = OutboundMessage.objects.filter(account__owner_id=account.owner_id).select_related(
        "account"
    )
    if report.envelope_id:
        found = mine.filter(envelope_id=report.envelope_id).first()
        if found is not None:
            return found, "envelope_id"
    for key, value in (("message_id", report.original_message_id), ("in_reply_to", in_reply_to)):
        if value:
            found = mine.filter(message_id_header__in=_id_forms(value)).first()
            if found is not None:
                return found, key
    return None, ""


def _id_forms(message_id: str) -> list[str]:
    bare = message_id.strip().strip("<>")
    return [f"<{bare}>", bare]


def _apply(
    outbound: OutboundMessage, message: Message, reported: list[ReportedRecipient]
) -> dict[int, str]:
    """Update the outbound's recipients the report names; {report index: address updated}."""
    with transaction.atomic():
        rows = {
            r.address.lower(): r
            for r in OutboundRecipient.objects.select_for_update().filter(outbound=outbound)
        }
        outcomes: dict[str, dict[str, object]] = {}
        applied: dict[int, str] = {}
        for index, recipient in enumerate(reported):
            row = _row_for(rows, recipient)
            status = ACTION_STATUS.get(recipient.action)
            if row is None or status is None:
                continue
            if status == Status.DELAYED and (
                row.status in FINAL_STATUSES or outcomes.get(row.address, {}).get("status")
            ):
                continue
            outcomes[row.address] = {
                "status": status,
                "action": recipient.action,
                "status_code": recipient.status[:16],
                "diagnostic_code": recipient.diagnostic_code,
                "remote_mta": recipient.remote_mta[:998],
                "reported_at": _reported_at(recipient, message),
                "report_message": message,
            }
            applied[index] = row.address
        if outcomes:
            recipients_update(outbound, outcomes)
    return applied


def _row_for(
    rows: dict[str, OutboundRecipient], recipient: ReportedRecipient
) -> OutboundRecipient | None:
    for address in (recipient.original_address, recipient.address):
        if address and address.lower() in rows:
            return rows[address.lower()]
    return None


def _reported_at(recipient: ReportedRecipient, message: Message) -> datetime:
    return recipient.last_attempt or message.date or timezone.now()
