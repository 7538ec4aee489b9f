"""Delivery reports in incoming mail: RFC 3464 DSNs and the non-standard bounces MTAs send.

Parsing only (no database): `report_candidate` is the prefilter the ingest runs on every
message, from what the conversion has read already (top-level content type, From, Subject),
so ordinary mail pays a few string tests; `report_parse` reads a candidate's raw bytes.

Real DSNs are often damaged: fields missing, folded, oddly cased, blocks without the blank
line between them, the status part sent as text/plain or base64 inside a block, dates no
parser reads. The fields are therefore read by name, not by position, whatever can be read is
kept, and each problem becomes a defect string. Nothing here raises.
Non-standard bounces (qmail, Exim, Exchange...) go through flufl.bounce's detectors; a
sender or subject that looks like a bounce only decides that they are tried.
"""

from __future__ import annotations

import base64
import binascii
import email
import logging
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.message import Message
from email.policy import compat32
from email.utils import collapse_rfc2231_value, parsedate_to_datetime

from flufl.bounce import all_failures

from .mime import ParsedMessage, fix_text

logger = logging.getLogger(__name__)

# Bigger reports (a whole message returned, RET=FULL) are read from their start only: the
# status part comes before the returned message.
SCAN_MAX_BYTES = 1024 * 1024
# flufl.bounce's generic detectors take ~3 ms per KB of text: other bounces are read from their
# first 64 KB (the failed addresses come first, the copy of the message after).
BOUNCE_SCAN_MAX_BYTES = 64 * 1024
MAX_RECIPIENTS = 500
MAX_DEPTH = 5

STATUS_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
RETURNED_TYPES = frozenset({"message/rfc822", "message/global"})
RETURNED_HEADER_TYPES = frozenset({"text/rfc822-headers", "message/global-headers"})
DSN_REPORT_TYPES = frozenset({"delivery-status", "global-delivery-status"})
ACTIONS = ("failed", "delayed", "delivered", "relayed", "expanded")

_BOUNCE_SENDERS = frozenset(
    {"mailer-daemon", "mailer_daemon", "mailerdaemon", "mail-daemon", "postmaster", "postoffice"}
)
_BOUNCE_SENDER_NAMES = re.compile(r"mail delivery (?:system|subsystem|service)|postmaster", re.I)
_BOUNCE_SUBJECTS = re.compile(
    r"undeliver|non[- ]?deliver|delivery (?:status|fail|failure|notification|report|problem)"
    r"|returned mail|mail delivery failed|failure notice|could not be delivered|returned to "
    r"sender|delivery has failed|mail system error|delayed mail|warning: could not send",
    re.I,
)
_FIELD = re.compile(r"([A-Za-z0-9][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)")
_STATUS_CODE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SMTP_CODE = re.compile(r"\b([245])\d\d\b")
_XTEXT = re.compile(r"\+([0-9A-Fa-f]{2})")
_MESSAGE_ID = re.compile(r"<([^<>\s]+)>")
_HEADER_MESSAGE_ID = re.compile(r"^Message-ID[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.I | re.M)
_BODY_MESSAGE_ID = re.compile(r"^[ \t>]*Message-ID[ \t]*:[ \t]*(<[^<>\s]+>)", re.I | re.M)

_RECIPIENT_FIELDS = frozenset(
    {
        "final-recipient",
        "original-recipient",
        "action",
        "status",
        "remote-mta",
        "diagnostic-code",
        "last-attempt-date",
        "final-log-id",
        "will-retry-until",
        "x-actual-recipient",
    }
)
_MESSAGE_FIELDS = frozenset(
    {"original-envelope-id", "reporting-mta", "dsn-gateway", "received-from-mta", "arrival-date"}
)


@dataclass
class ReportedRecipient:
    """What a report says about one recipient. ACTION is one of ACTIONS, or "" when the
    report does not say (nor its status)."""

    address: str  # Final-Recipient, else Original-Recipient
    original_address: str = ""
    action: str = ""
    status: str = ""  # e.g. 5.1.1
    diagnostic_code: str = ""
    remote_mta: str = ""
    last_attempt: datetime | None = None

    def as_json(self) -> dict[str, str | None]:
        data = asdict(self)
        data["last_attempt"] = self.last_attempt.isoformat() if self.last_attempt else None
        return data


@dataclass
class ParsedReport:
    kind: str  # "dsn" or "bounce" (DeliveryReport.Kind)
    envelope_id: str = ""
    reporting_mta: str = ""
    arrival_date: datetime | None = None
    original_message_id: str = ""  # "<id>", from the returned message or headers
    recipients: list[ReportedRecipient] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)


def report_candidate(parsed: ParsedMessage) -> bool:
    """Can this message be a delivery report? True for every multipart/report, and for mail
    whose sender or subject looks like a bounce: only those are read again."""
    if parsed.content_type == "multipart/report":
        return True
    local = parsed.from_address.partition("@")[0].lower()
    if local in _BOUNCE_SENDERS:
        return True
    if parsed.from_name and _BOUNCE_SENDER_NAMES.search(parsed.from_name):
        return True
    return bool(parsed.subject and _BOUNCE_SUBJECTS.search(parsed.subject))


def report_parse(raw: bytes, tree: Message | None = None) -> ParsedReport | None:
    """The delivery report in RAW, or None when it is not one. Never raises: a report that
    cannot be read in full is returned with what could be read and its defects.
    TREE: RAW already parsed by the standard parser (compat32), if at hand."""
    defects: list[str] = []
    if len(raw) > SCAN_MAX_BYTES:
        raw = raw[:SCAN_MAX_BYTES]
        defects.append(f"read from its first {SCAN_MAX_BYTES} bytes only")
        tree = None
    try:
        msg = tree if tree is not None else email.message_from_bytes(raw, policy=compat32)
    except Exception as exc:  # the parser does not raise on bad mail; this is a last guard
        logger.warning("delivery report unreadable: %s", exc, exc_info=exc)
        return None
    report_part = None
    try:
        report_part = _report_part(msg, 0)
        if report_part is not None:
            report = _read_dsn(report_part, defects, len(raw) <= BOUNCE_SCAN_MAX_BYTES)
        elif msg.get_content_type() == "multipart/report":
            return None  # another kind of report: read receipt, abuse feedback...
        else:
            if len(raw) > BOUNCE_SCAN_MAX_BYTES:
                msg = email.message_from_bytes(raw[:BOUNCE_SCAN_MAX_BYTES], policy=compat32)
                defects[:] = [f"read from its first {BOUNCE_SCAN_MAX_BYTES} bytes only"]
            report = _read_bounce(msg, defects)
    except Exception as exc:
        logger.warning("delivery report unreadable: %s", exc, exc_info=exc)
        if report_part is None:
            return None
        report = ParsedReport(kind="dsn", defects=defects)
        report.defects.append(f"report unreadable ({type(exc).__name__}: {exc})"[:300])
    return report


# RFC 3464 ------------------------------------------------------------------------------------
def _report_part(part: Message, depth: int) -> Message | None:
    """The multipart/report of delivery status in PART (the message itself, or one a wrapper
    holds), not looking into returned messages; None if there is none."""
    content_type = part.get_content_type()
    if content_type == "multipart/report":
        if _report_type(part) in DSN_REPORT_TYPES or any(
            child.get_content_type() in STATUS_TYPES for child in _children(part)
        ):
            return part
        return None
    if content_type.startswith("multipart/") and depth < MAX_DEPTH:
        for child in _children(part):
            found = _report_part(child, depth + 1)
            if found is not None:
                return found
    return None


def _report_type(part: Message) -> str:
    value = part.get_param("report-type")
    if isinstance(value, tuple):
        value = collapse_rfc2231_value(value)
    return str(value or "").strip().lower()


def _children(part: Message) -> list[Message]:
    payload = part.get_payload()
    return [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []


def _read_dsn(report_part: Message, defects: list[str], detectors: bool) -> ParsedReport:
    """DETECTORS: try the bounce detectors when no recipient can be read (small reports)."""
    report = ParsedReport(kind="dsn", defects=defects)
    if _report_type(report_part) not in DSN_REPORT_TYPES:
        defects.append(f"report-type is {_report_type(report_part)!r}, not delivery-status")
    children = _children(report_part)
    status_parts = [c for c in children if c.get_content_type() in STATUS_TYPES]
    if not status_parts:
        substitute = _substitute_status_part(children)
        if substitute is not None:
            defects.append(
                f"no message/delivery-status part; fields read from the "
                f"{substitute.get_content_type()} part"
            )
            status_parts = [substitute]
        else:
            defects.append("no message/delivery-status part")
    for part in status_parts:
        _read_status_fields(_status_text(part, defects), report)
    if not report.recipients and status_parts:
        defects.append("no recipient in the delivery status")
    report.original_message_id = _returned_message_id(children, defects)
    if not report.recipients and detectors:
        report.recipients = _flufl_recipients(report_part, defects)
    return report


def _substitute_status_part(children: list[Message]) -> Message | None:
    """Damaged reports put the fields in a text part: the second part, else a later one."""
    candidates = [
        c
        for c in children[1:]
        if c.get_content_maintype() == "text" and c.get_content_type() not in RETURNED_HEADER_TYPES
    ]
    return candidates[0] if candidates else None


def _status_text(part: Message, defects: list[str]) -> str:
    """The status part's fields as text, however they were sent."""
    payload = part.get_payload()
    if not isinstance(payload, list):
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes):
            data = str(payload or "").encode("utf-8", "surrogateescape")
        return data.decode("utf-8", "replace")
    chunks = []
    encoding = ""
    for block in payload:
        if not isinstance(block, Message):
            continue
        # a header block naming an encoding, then the encoded text as a block of its own
        if block.keys():
            encoding = str(block.get("Content-Transfer-Encoding", "")).strip().lower()
        chunks.append("\n".join(f"{name}: {value}" for name, value in block.raw_items()))
        body = block.get_payload()
        if not isinstance(body, str) or not body.strip():
            continue
        if encoding == "base64":
            try:
                body = base64.b64decode(body, validate=False).decode("utf-8", "replace")
                defects.append("status fields base64-encoded inside the status part")
            except (binascii.Error, ValueError):
                defects.append("undecodable base64 inside the status part")
                continue
        chunks.append(body)
    return "\n\n".join(chunks)


def _blocks(text: str) -> tuple[list[list[tuple[str, str]]], int]:
    """Field blocks (lowercased name, unfolded value) separated by blank lines; the number of
    lines that were not fields."""
    blocks: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    junk = 0
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = []
            continue
        if line[0] in " \t":
            if current:
                name, value = current[-1]
                current[-1] = (name, f"{value} {line.strip()}".strip())
            else:
                junk += 1
            continue
        match = _FIELD.fullmatch(line.rstrip())
        if match:
            current.append((match[1].lower(), match[2].strip()))
        else:
            junk += 1
    if current:
        blocks.append(current)
    return blocks, junk


def _read_status_fields(text: str, report: ParsedReport) -> None:
    blocks, junk = _blocks(fix_text(text))  # no NUL, no escaped 8-bit bytes: storable
    if junk:
        report.defects.append(f"{junk} line(s) of the status part are not fields")
    recipients: list[dict[str, str]] = []
    for block in blocks:
        current: dict[str, str] | None = None
        for name, value in block:
            if name in _RECIPIENT_FIELDS:
                # a field met twice: the next recipient began without its blank line
                if current is None or name in current:
                    current = {}
                    recipients.append(current)
                current[name] = value
            elif name in _MESSAGE_FIELDS:
                _message_field(report, name, value)
    for fields in recipients:
        recipient = _recipient(fields, report.defects)
        if recipient is not None and len(report.recipients) < MAX_RECIPIENTS:
            report.recipients.append(recipient)


def _message_field(report: ParsedReport, name: str, value: str) -> None:
    if name == "original-envelope-id" and not report.envelope_id:
        report.envelope_id = value.strip()[:100]
    elif name == "reporting-mta" and not report.reporting_mta:
        report.reporting_mta = _typed_value(value)[:998]
    elif name == "arrival-date" and report.arrival_date is None:
        report.arrival_date = _date(value, "Arrival-Date", report.defects)


def _recipient(fields: dict[str, str], defects: list[str]) -> ReportedRecipient | None:
    final = _address(fields.get("final-recipient", ""))
    original = _address(fields.get("original-recipient", ""))
    if not final and not original:
        defects.append("a recipient block without Final-Recipient or Original-Recipient")
        return None
    if not final:
        defects.append(f"no Final-Recipient for {original}")
    recipient = ReportedRecipient(
        address=final or original,
        original_address=original,
        diagnostic_code=fields.get("diagnostic-code", "")[:2000],
        remote_mta=_typed_value(fields.get("remote-mta", ""))[:998],
    )
    if "last-attempt-date" in fields:
        recipient.last_attempt = _date(fields["last-attempt-date"], "Last-Attempt-Date", defects)
    recipient.status = _status_code(fields.get("status", ""))
    if not recipient.status:
        recipient.status = _status_code(recipient.diagnostic_code) or _status_from_smtp(
            recipient.diagnostic_code
        )
        what = f"inferred {recipient.status} from" if recipient.status else "nor"
        defects.append(f"no readable Status for {recipient.address} ({what} its Diagnostic-Code)")
    action = fields.get("action", "").strip().lower().split(" ")[0].rstrip(";,")
    if action in ACTIONS:
        recipient.action = action
    else:
        recipient.action = _action_from_status(recipient.status)
        said = f"Action {fields['action']!r}" if "action" in fields else "no Action"
        inferred = f"; {recipient.action} inferred from its status" if recipient.action else ""
        defects.append(f"{said} for {recipient.address}{inferred}")
    return recipient


def _address(value: str) -> str:
    """The address of an "rfc822; user@host" field (the type may be missing)."""
    kind, sep, rest = value.partition(";")
    address = (rest if sep else kind).strip().strip("<>").strip()
    if sep and kind.strip().lower() == "utf-8":
        address = _xtext(address)
    return address[:998]


def _typed_value(value: str) -> str:
    """ "dns; mx.example.com" -> "mx.example.com"."""
    kind, sep, rest = value.partition(";")
    return (rest if sep else kind).strip()


def _xtext(value: str) -> str:
    return _XTEXT.sub(lambda m: chr(int(m[1], 16)), value)


def _status_code(value: str) -> str:
    match = _STATUS_CODE.search(value)
    return f"{match[1]}.{match[2]}.{match[3]}" if match else ""


def _status_from_smtp(value: str) -> str:
    match = _SMTP_CODE.search(value)
    return f"{match[1]}.0.0" if match else ""


def _action_from_status(status: str) -> str:
    return {"5": "failed", "4": "delayed", "2": "delivered"}.get(status[:1], "")


def _date(value: str, name: str, defects: list[str]) -> datetime | None:
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        parsed = None
    if parsed is None:
        defects.append(f"{name} unreadable: {value[:100]!r}")
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _returned_message_id(children: list[Message], defects: list[str]) -> str:
    """The Message-ID of the returned message (or of its returned headers)."""
    for child in children:
        content_type = child.get_content_type()
        if content_type in RETURNED_TYPES:
            returned = _children(child)
            if returned:
                value = returned[0].get("Message-ID")
                if value is not None:
                    return _message_id(str(value))
            else:  # a body the parser kept as text (e.g. base64-encoded)
                found = _message_id_in_headers(child.get_payload(decode=True))
                if found:
                    return found
        elif content_type in RETURNED_HEADER_TYPES:
            found = _message_id_in_headers(child.get_payload(decode=True))
            if found:
                return found
    if any(c.get_content_type() in RETURNED_TYPES | RETURNED_HEADER_TYPES for c in children):
        defects.append("the returned message has no Message-ID")
    return ""


def _message_id(value: str) -> str:
    match = _MESSAGE_ID.search(fix_text(value))
    return f"<{match[1]}>"[:998] if match else ""


def _message_id_in_headers(data: object) -> str:
    if not isinstance(data, bytes) or not data:
        return ""
    head = re.split(rb"\r?\n\r?\n", data.lstrip(), maxsplit=1)[0]
    match = _HEADER_MESSAGE_ID.search(head.decode("utf-8", "replace"))
    return _message_id(match[1]) if match else ""


# Non-standard bounces ---------------------------------------------------------------------
def _read_bounce(msg: Message, defects: list[str]) -> ParsedReport | None:
    recipients = _flufl_recipients(msg, defects)
    if not recipients:
        return None
    report = ParsedReport(kind="bounce", recipients=recipients, defects=defects)
    report.original_message_id = _bounce_original_id(msg)
    return report


def _flufl_recipients(msg: Message, defects: list[str]) -> list[ReportedRecipient]:
    try:
        temporary, permanent = all_failures(msg)
    except Exception as exc:  # a detector failing on odd input
        defects.append(f"bounce detectors failed ({type(exc).__name__}: {exc})"[:300])
        return []
    found = [(a, "failed") for a in sorted(permanent)]
    found += [(a, "delayed") for a in sorted(temporary - permanent)]
    recipients = []
    for address, action in found[:MAX_RECIPIENTS]:
        text = address.decode("utf-8", "replace") if isinstance(address, bytes) else str(address)
        text = fix_text(text)
        recipients.append(ReportedRecipient(address=text.strip().strip("<>")[:998], action=action))
    return recipients


def _bounce_original_id(msg: Message) -> str:
    """The returned message's Message-ID: an attached message or headers, else a
    "Message-ID:" line of the returned copy in the text."""
    found = _returned_message_id(list(_leaves(msg)), [])
    if found:
        return found
    for part in _leaves(msg):
        if part.get_content_maintype() != "text":
            continue
        data = part.get_payload(decode=True)
        if isinstance(data, bytes):
            match = _BODY_MESSAGE_ID.search(data.decode("utf-8", "replace"))
            if match:
                return _message_id(match[1])
    return ""


def _leaves(msg: Message, depth: int = 0):
    """Parts of MSG, not looking into attached messages."""
    if msg.is_multipart() and msg.get_content_type() not in RETURNED_TYPES:
        if depth < MAX_DEPTH:
            for child in _children(msg):
                yield from _leaves(child, depth + 1)
    else:
        yield msg
