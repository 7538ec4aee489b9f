"""Raw RFC 5322 bytes -> the store's fields, with the standard library, defensively.

Nothing here raises on bad mail: every problem becomes a defect string on the result, and
whatever could be read is kept. The raw bytes are stored beside the result by the caller.

The MIME structure comes from the standard parser (the same feedparser, with its defects);
headers are decoded with `email.header` / `email.utils`, and bodies in their declared
charset, under the compat32 policy. `policy.default` parses every header through
its header registry on each access: profiled on the corpus it was 85% of the conversion time
(4.8 ms against 1.2 ms a message), for the same values on well-formed mail.
"""

from __future__ import annotations

import email
import hashlib
import html as html_lib
import io
import logging
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import getaddresses, parsedate_to_datetime
from typing import BinaryIO

import nh3
from charset_normalizer import from_bytes as detect_charset

from . import feedparser_boundaries

logger = logging.getLogger(__name__)
feedparser_boundaries.install()  # the standard parser's multipart boundaries, cheaper

SNIPPET_LENGTH = 200
MAX_PARTS = 500
MAX_MESSAGE_ID_LENGTH = 500
_MSGID_RE = re.compile(r"<([^<>\s]+)>")
_WS_RE = re.compile(r"\s+")
_HEADER_END_RE = re.compile(rb"\r?\n\r?\n")
# "5 Jan 101 10:00": a day, a month name, then a two- or three-digit year (RFC 5322 4.3).
_SHORT_YEAR_RE = re.compile(r"(\b\d{1,2}[\s-]+[A-Za-z]{3,}\.?[\s-]+)(\d{2,3})(?=\s|$)")
_UNICODE_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})
# Parts whose fields are shown as the body of a report with no text of its own.
_STATUS_TYPES = frozenset(
    {
        "message/delivery-status",
        "message/global-delivery-status",
        "message/disposition-notification",
        "message/global-disposition-notification",
    }
)
FALLBACK_BODY_BYTES = 1024 * 1024
# Conversions that raised and fell back to a minimal parse, by exception type (this process).
conversion_failures: Counter[str] = Counter()


@dataclass
class ParsedAttachment:
    part_path: str
    filename: str
    content_type: str
    content_id: str
    is_inline: bool
    payload: bytes
    sha256: str
    spill_path: str | None = None  # big parts of big messages: decoded into this file instead
    spill_size: int = 0

    @property
    def size(self) -> int:
        return self.spill_size if self.spill_path else len(self.payload)

    def open(self) -> BinaryIO:
        return open(self.spill_path, "rb") if self.spill_path else io.BytesIO(self.payload)  # noqa: SIM115


@dataclass
class ParsedMessage:
    message_id: str = ""
    in_reply_to: str = ""
    references: list[str] = field(default_factory=list)
    subject: str = ""
    from_name: str = ""
    from_address: str = ""
    to: list[dict[str, str]] = field(default_factory=list)
    cc: list[dict[str, str]] = field(default_factory=list)
    bcc: list[dict[str, str]] = field(default_factory=list)
    reply_to: list[dict[str, str]] = field(default_factory=list)
    date: datetime | None = None
    body_text: str = ""
    body_html: str = ""
    snippet: str = ""
    attachments: list[ParsedAttachment] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    size: int = 0
    sha256: str = ""
    content_type: str = ""  # of the message itself, e.g. multipart/report
    # A multipart/report's parsed tree, kept for the delivery report reader (not parsed twice).
    report_tree: Message | None = field(default=None, repr=False, compare=False)
    # The message's charset parameters, how raw 8-bit bytes are read: found on first use, in
    # the tree being read (most mail never needs them).
    _tree: Message | None = field(default=None, repr=False, compare=False)
    _charsets: list[str] | None = field(default=None, repr=False, compare=False)

    @property
    def charsets(self) -> list[str]:
        if self._charsets is None:
            self._charsets = _declared_charsets(self._tree) if self._tree is not None else []
        return self._charsets


def parse_message(raw: bytes) -> ParsedMessage:
    """Never raises: whatever goes wrong becomes a defect (see `conversion_failed`)."""
    result = ParsedMessage(size=len(raw), sha256=hashlib.sha256(raw).hexdigest())
    try:
        msg = email.message_from_bytes(raw, policy=policy.compat32)
        read_message(msg, result)
    except Exception as exc:
        return conversion_failed(raw, exc, size=result.size, sha256=result.sha256)
    if result.content_type == "multipart/report":
        result.report_tree = msg
    return result


def read_message(msg: Message, result: ParsedMessage) -> None:
    """Fill RESULT from a parsed message tree (see messages.mime_stream for other parsers)."""
    result._tree = msg
    try:
        result.content_type = _content_type(msg)
        _read_headers(msg, result)
        try:
            _read_parts(msg, result)
        except RecursionError:
            result.defects.append("MIME structure nested too deeply; body read as plain text")
            result.body_text = _decode_bytes(_payload_bytes(msg), "utf-8", result)
        _collect_parser_defects(msg, result)
        result.snippet = _snippet(result.body_text or _html_to_text(result.body_html))
    finally:
        result._tree = None  # the tree is big: not kept with the result


def conversion_failed(head: bytes, exc: Exception, *, size: int, sha256: str) -> ParsedMessage:
    """The minimal parse of a message whose conversion raised: its headers as far as they can
    be read, the start of its body as text, and the failure as a defect (raw bytes are kept by
    the caller). HEAD is the message, or its beginning when it is too big to hold."""
    conversion_failures[type(exc).__name__] += 1
    logger.warning("MIME conversion failed (%s); minimal parse", type(exc).__name__, exc_info=exc)
    result = ParsedMessage(size=size, sha256=sha256)
    result.defects.append(f"conversion failed: {type(exc).__name__}: {str(exc)[:200]}")
    end = _HEADER_END_RE.search(head)
    header_bytes, body = (head[: end.end()], head[end.end() :]) if end else (head, b"")
    try:
        headers = BytesHeaderParser(policy=policy.compat32).parsebytes(header_bytes)
        result._tree = headers
        _read_headers(headers, result)
    except Exception as header_exc:
        result.defects.append(f"headers unreadable ({type(header_exc).__name__})")
    result._tree = None
    result.body_text = _clean_text(decode_8bit(body[:FALLBACK_BODY_BYTES], result.charsets))
    result.snippet = _snippet(result.body_text)
    return result


def _declared_charsets(msg: Message) -> list[str]:
    found: list[str] = []
    for part in _walk(msg):
        try:
            charset = part.get_content_charset()
        except Exception:
            charset = None
        if charset and charset not in _UNICODE_CHARSETS and charset not in found:
            found.append(charset)
    return found


def _raw_values(msg: Message, name: str) -> list[str]:
    wanted = name.lower()
    return [str(v) for k, v in msg.raw_items() if k.lower() == wanted]


def _header(msg: Message, name: str, result: ParsedMessage) -> str:
    values = _raw_values(msg, name)
    if not values:
        return ""
    text = decode_words(values[0], result, name)
    return _WS_RE.sub(" ", text).strip() if name.lower() != "subject" else text.strip()


def decode_words(value: str, result: ParsedMessage | None = None, name: str = "header") -> str:
    """RFC 2047 encoded words decoded; raw 8-bit read as UTF-8 (RFC 6532), else in a charset
    the message declares, else as a detector guesses, else as Latin-1."""
    value = _fix(value, result)
    if "=?" not in value:
        return _unfold(value)
    try:
        return str(make_header(decode_header(value)))
    except Exception as exc:
        if result is not None:
            result.defects.append(f"{name} header: encoded words unreadable ({type(exc).__name__})")
    parts = []
    try:
        decoded = decode_header(value)
    except Exception:
        return _unfold(value)
    for chunk, charset in decoded:
        if isinstance(chunk, str):
            parts.append(chunk)
            continue
        try:
            parts.append(chunk.decode(charset or "ascii", errors="replace"))
        except Exception:
            parts.append(chunk.decode("utf-8", errors="replace"))
    return _unfold("".join(parts))


def _unfold(value: str) -> str:
    return value.replace("\r\n", "").replace("\n", "")


def _addresses(msg: Message, name: str, result: ParsedMessage) -> list[dict[str, str]]:
    values = [_fix(v, result) for v in _raw_values(msg, name)]
    if not values:
        return []
    try:
        pairs = getaddresses(values)
    except Exception as exc:  # getaddresses is lenient; keep the header rather than fail
        result.defects.append(f"{name} header unreadable ({type(exc).__name__})")
        return [{"name": decode_words(v), "address": ""} for v in values]
    people = [
        {"name": decode_words(display, result, name).strip(), "address": address.strip("<>")}
        for display, address in pairs
        if display or address
    ]
    if not people and any(v.strip() for v in values):
        result.defects.append(f"{name} header holds no readable address")
    return people


def _message_ids(value: str) -> list[str]:
    found = _MSGID_RE.findall(value)
    if not found and value.strip():
        found = [token.strip("<>") for token in value.split() if token.strip("<>")]
    return [_bounded_id(mid) for mid in found]


def _bounded_id(mid: str) -> str:
    """Message-IDs are indexed: an absurdly long one is replaced by its hash."""
    if len(mid) <= MAX_MESSAGE_ID_LENGTH:
        return f"<{mid}>"
    return f"<sha256-{hashlib.sha256(mid.encode('utf-8', 'replace')).hexdigest()}@long-id>"


def message_id_from_fields(fields: bytes) -> str:
    """The Message-ID as `parse_message` keeps it, read from header fields alone (e.g. an IMAP
    BODY[HEADER.FIELDS (MESSAGE-ID)]); "" when there is none or it cannot be read."""
    result = ParsedMessage()
    try:
        _read_ids(email.message_from_bytes(fields, policy=policy.compat32), result)
    except Exception:
        return ""
    return result.message_id


def _read_headers(msg: Message, result: ParsedMessage) -> None:
    """Each header on its own: one that cannot be read is a defect, the others are kept."""
    for name, read in _HEADER_READERS:
        try:
            read(msg, result)
        except Exception as exc:
            result.defects.append(f"{name} header unreadable ({type(exc).__name__}: {exc})"[:300])


def _read_subject(msg: Message, result: ParsedMessage) -> None:
    result.subject = _header(msg, "Subject", result)


def _read_ids(msg: Message, result: ParsedMessage) -> None:
    ids = _message_ids(_header(msg, "Message-ID", result))
    result.message_id = ids[0] if ids else ""
    in_reply_to = _message_ids(_header(msg, "In-Reply-To", result))
    result.in_reply_to = in_reply_to[0] if in_reply_to else ""
    result.references = _message_ids(_header(msg, "References", result))


def _read_sender(msg: Message, result: ParsedMessage) -> None:
    senders = _addresses(msg, "From", result) or _addresses(msg, "Sender", result)
    if senders:
        result.from_name = senders[0]["name"]
        result.from_address = senders[0]["address"]


def _read_recipients(msg: Message, result: ParsedMessage) -> None:
    result.to = _addresses(msg, "To", result)
    result.cc = _addresses(msg, "Cc", result)
    result.bcc = _addresses(msg, "Bcc", result)
    result.reply_to = _addresses(msg, "Reply-To", result)


def _read_date(msg: Message, result: ParsedMessage) -> None:
    result.date = _parse_date(_header(msg, "Date", result), result)


_HEADER_READERS: tuple[tuple[str, Callable[[Message, ParsedMessage], None]], ...] = (
    ("Subject", _read_subject),
    ("Message-ID", _read_ids),
    ("From", _read_sender),
    ("To", _read_recipients),
    ("Date", _read_date),
)


def _parse_date(value: str, result: ParsedMessage) -> datetime | None:
    if not value:
        return None
    value = _SHORT_YEAR_RE.sub(_four_digit_year, value, count=1)
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        result.defects.append(f"Date header unparseable: {value[:100]!r}")
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if not 1900 <= parsed.year <= 9000:  # RFC 5322 reads "50" as 1950
        result.defects.append(f"Date header out of range: {value[:100]!r}")
        return None
    return parsed


def _four_digit_year(match: re.Match[str]) -> str:
    """RFC 5322 4.3: 00-49 are 2000-2049; 50-99 and any three-digit year add 1900."""
    digits = match.group(2)
    year = int(digits)
    year += 2000 if len(digits) == 2 and year < 50 else 1900
    return f"{match.group(1)}{year}"


def _collect_parser_defects(msg: Message, result: ParsedMessage) -> None:
    seen: set[str] = set(result.defects)
    for part in _walk(msg):
        for defect in getattr(part, "defects", []):
            text = defect_text(defect)
            if text not in seen:
                seen.add(text)
                result.defects.append(text)


def defect_text(defect: Exception) -> str:
    text = type(defect).__name__
    detail = str(defect)
    return f"{text}: {detail[:200]}" if detail and detail != text else text


def _walk(msg: Message):
    """Every part, depth first, iteratively (no recursion limit), bounded in count."""
    stack = [msg]
    count = 0
    while stack and count < MAX_PARTS:
        part = stack.pop()
        count += 1
        yield part
        if part.is_multipart():
            payload = part.get_payload()
            if isinstance(payload, list):
                stack.extend(reversed(payload))


def _read_parts(msg: Message, result: ParsedMessage) -> None:
    text_parts: list[str] = []
    html_parts: list[str] = []
    inline_texts: list[tuple[str, str]] = []  # (content type, text) of named inline text parts
    status_texts: list[str] = []
    stack: list[tuple[Message, str]] = [(msg, "")]
    count = 0
    while stack:
        part, path = stack.pop()
        count += 1
        if count > MAX_PARTS:
            result.defects.append(f"more than {MAX_PARTS} MIME parts; the rest kept in raw only")
            break
        content_type = _content_type(part)
        if content_type in _STATUS_TYPES:
            status_texts.append(_status_text(part, result))
            continue
        if part.is_multipart() and content_type != "message/rfc822":
            children = part.get_payload()
            if not isinstance(children, list):
                continue
            for index in range(len(children) - 1, -1, -1):
                child_path = f"{path}.{index + 1}" if path else str(index + 1)
                stack.append((children[index], child_path))
            continue
        leaf_path = path or "1"
        if content_type.startswith("multipart/"):
            result.defects.append(f"{content_type} part without readable parts; kept as text")
            text_parts.append(_clean_text(_decode_bytes(_payload_bytes(part), "utf-8", result)))
            continue
        disposition = _disposition(part)
        filename = _filename(part, result)
        is_text = content_type in ("text/plain", "text/html")
        if is_text and disposition != "attachment" and not filename:
            text = _text_content(part, result)
            (text_parts if content_type == "text/plain" else html_parts).append(text)
            continue
        if is_text and disposition != "attachment" and not inline_texts:
            inline_texts.append((content_type, _text_content(part, result)))
        result.attachments.append(_attachment(part, leaf_path, content_type, filename, result))
    result.body_text = "\n\n".join(t for t in text_parts if t)
    result.body_html = "\n".join(h for h in html_parts if h)
    if not result.body_text and not result.body_html and inline_texts:
        content_type, text = inline_texts[0]
        if content_type == "text/plain":
            result.body_text = text
        else:
            result.body_html = text
    if not result.body_text and result.body_html:
        result.body_text = _html_to_text(result.body_html)
    if not result.body_text:
        result.body_text = "\n\n".join(t for t in status_texts if t)


def _attachment(
    part: Message, path: str, content_type: str, filename: str, result: ParsedMessage
) -> ParsedAttachment:
    disposition = _disposition(part)
    if content_type == "message/rfc822":
        payload = _embedded_message_bytes(part)
        filename = filename or "forwarded-message.eml"
    else:
        payload = _payload_bytes(part)
    return ParsedAttachment(
        part_path=path,
        filename=filename,
        content_type=content_type,
        content_id=_header(part, "Content-ID", result).strip("<>"),
        is_inline=disposition == "inline" or (disposition == "" and _has_cid(part)),
        payload=payload,
        sha256=hashlib.sha256(payload).hexdigest(),
    )


def _status_text(part: Message, result: ParsedMessage) -> str:
    """A delivery or disposition report's fields (blocks of header lines), as text."""
    payload = part.get_payload()
    if not isinstance(payload, list):
        return _clean_text(_decode_bytes(_payload_bytes(part), "utf-8", result))
    blocks = []
    for block in payload:
        if not isinstance(block, Message):
            continue
        lines = [f"{name}: {decode_words(str(value), result)}" for name, value in block.raw_items()]
        body = block.get_payload()
        if isinstance(body, str) and body.strip():
            lines.append(_clean_text(_fix(body, result)).strip())
        blocks.append("\n".join(lines))
    return "\n\n".join(b for b in blocks if b)


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:
        return "application/octet-stream"


def _disposition(part: Message) -> str:
    try:
        return (part.get_content_disposition() or "").lower()
    except Exception:
        return ""


def _has_cid(part: Message) -> bool:
    try:
        return part.get("Content-ID") is not None
    except Exception:
        return False


def _filename(part: Message, result: ParsedMessage) -> str:
    try:
        name = _readable_params(part, result).get_filename() or ""
    except Exception as exc:
        result.defects.append(f"attachment filename unreadable ({type(exc).__name__})")
        return ""
    return decode_words(str(name), result, "filename").strip()


def _readable_params(part: Message, result: ParsedMessage) -> Message:
    """PART, or when its Content-Type / Content-Disposition hold raw 8-bit bytes (RFC 6532),
    a copy of its headers with those bytes decoded: the parser would read them as U+FFFD."""
    if all(
        value.isascii()
        for name, value in part.raw_items()
        if name.lower() in ("content-type", "content-disposition")
    ):
        return part
    view = Message()
    for name, value in part.raw_items():
        view[name] = _fix(str(value), result)
    return view


def _payload_bytes(part: Message) -> bytes:
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        payload = None
    if payload is None:
        raw = part.get_payload()
        if isinstance(raw, str):
            return raw.encode("utf-8", errors="surrogateescape")
        return b""
    return payload


def _embedded_message_bytes(part: Message) -> bytes:
    payload = part.get_payload()
    if isinstance(payload, list) and payload:
        try:
            return payload[0].as_bytes(policy=policy.compat32)
        except Exception:
            return str(payload[0]).encode("utf-8", errors="replace")
    return _payload_bytes(part)


def _text_content(part: Message, result: ParsedMessage) -> str:
    """The text of a part in its declared charset (`get_content_charset` also reads an
    RFC 2231 `charset*=` value); undeclared, as UTF-8 or else as `decode_8bit` reads it."""
    payload = _payload_bytes(part)
    try:
        charset = part.get_content_charset()
    except Exception:
        result.defects.append("text part charset unreadable")
        charset = None
    if charset:
        return _clean_text(_decode_bytes(payload, charset, result))
    try:
        return _clean_text(payload.decode("utf-8"))
    except UnicodeDecodeError:
        return _clean_text(decode_8bit(payload, result.charsets))


def _decode_bytes(payload: bytes, charset: str, result: ParsedMessage) -> str:
    try:
        return payload.decode(charset, errors="replace")
    except Exception as exc:  # unknown, or a codec that is no text encoding (base64, idna...)
        result.defects.append(f"unknown charset {charset!r} ({type(exc).__name__}); guessed")
        return decode_8bit(payload, result.charsets)


def decode_8bit(data: bytes, charsets: Sequence[str] = ()) -> str:
    """Bytes of no known charset: UTF-8, else the first of CHARSETS that reads them, else
    what charset-normalizer detects, else Latin-1 (which reads anything)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    for charset in charsets:
        try:
            return data.decode(charset)
        except (LookupError, UnicodeError, ValueError, TypeError):
            pass
    try:
        best = detect_charset(data).best()
    except Exception:
        best = None
    if best is not None:
        return str(best)
    return data.decode("latin-1")


def _clean_text(text: str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return fix_text(text).replace("\r\n", "\n")


def _fix(text: str, result: ParsedMessage | None) -> str:
    """`fix_text` with the message's charsets, looked for only when there are 8-bit bytes."""
    if text.isascii():
        return text.replace("\x00", "")
    return fix_text(text, result.charsets if result is not None else ())


def fix_text(text: str, charsets: Sequence[str] = ()) -> str:
    """Text PostgreSQL can store: no NUL, and no surrogates (8-bit header bytes the parser kept
    escaped are read by `decode_8bit`, trying CHARSETS)."""
    text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return decode_8bit(data, charsets).replace("\x00", "")


def _html_to_text(html: str) -> str:
    if not html:
        return ""
    return html_lib.unescape(nh3.clean(html, tags=set(), attributes={}))


def _snippet(text: str) -> str:
    head = _WS_RE.sub(" ", text[: SNIPPET_LENGTH * 10]).strip()  # not the whole body
    if len(head) < SNIPPET_LENGTH and len(text) > SNIPPET_LENGTH * 10:
        head = _WS_RE.sub(" ", text).strip()
    return head[:SNIPPET_LENGTH]
