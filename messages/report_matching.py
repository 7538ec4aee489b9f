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

from collections.abc import Sequence
from datetime import datetime

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .delivery_reports import ParsedReport, ReportedRecipient
from .models import Account, DeliveryReport, Message, OutboundMessage, OutboundRecipient
from .outbox_states import recipients_update

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
    """Record the reports FOUND in ACCOUNT's newly stored messages (inside their transaction):
    one query finds their outbound messages, one insert stores them."""
    candidates = _OutboundIndex(account, found)
    rows = []
    for message, report in found:
        outbound, matched_by = candidates.match(report, message.in_reply_to)
        applied = _apply(outbound, message, report.recipients) if outbound is not None else {}
        rows.append(
            DeliveryReport(
                message=message,
                kind=report.kind,
                outbound=outbound,
                matched_by=matched_by,
                recipients=[
                    {**r.as_json(), "recipient": applied.get(i)}
                    for i, r in enumerate(report.recipients)
                ],
                envelope_id=report.envelope_id,
                original_message_id=report.original_message_id[:998],
                reporting_mta=report.reporting_mta,
                defects=report.defects,
            )
        )
    return DeliveryReport.objects.bulk_create(rows)


class _OutboundIndex:
    """The owner's outbound messages the reports can name, by ENVID and by Message-ID."""

    def __init__(self, account: Account, found: Sequence[tuple[Message, ParsedReport]]) -> None:
        envelope_ids = {r.envelope_id for _, r in found if r.envelope_id}
        message_ids = {
            form
            for message, report in found
            for value in (report.original_message_id, message.in_reply_to)
            if value
            for form in _id_forms(value)
        }
        self.by_envelope: dict[str, OutboundMessage] = {}
        self.by_message_id: dict[str, OutboundMessage] = {}
        if not envelope_ids and not message_ids:
            return
        for outbound in OutboundMessage.objects.filter(
            Q(envelope_id__in=envelope_ids) | Q(message_id_header__in=message_ids),
            account__owner_id=account.owner_id,
        ).select_related("account"):
            if outbound.envelope_id:
                self.by_envelope[outbound.envelope_id] = outbound
            if outbound.message_id_header:
                self.by_message_id[_bare(outbound.message_id_header)] = outbound

    def match(self, report: ParsedReport, in_reply_to: str) -> tuple[OutboundMessage | None, str]:
        """By ENVID, else the returned message's Message-ID, else the report's In-Reply-To."""
        if report.envelope_id and report.envelope_id in self.by_envelope:
            return self.by_envelope[report.envelope_id], "envelope_id"
        keys = (("message_id", report.original_message_id), ("in_reply_to", in_reply_to))
        for key, value in keys:
            if value and _bare(value) in self.by_message_id:
                return self.by_message_id[_bare(value)], key
        return None, ""


def _bare(message_id: str) -> str:
    return message_id.strip().strip("<>")


def _id_forms(message_id: str) -> list[str]:
    return [f"<{_bare(message_id)}>", _bare(message_id)]


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
