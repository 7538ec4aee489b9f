"""The MIME bytes of an outbound message, built with `email.message.EmailMessage`.

Rules: the SMTP policy (CRLF line ends, headers folded at 78 characters, non-ASCII header text
as RFC 2047 encoded words, non-ASCII file names as RFC 2231), 7-bit bodies (quoted-printable or
base64 when needed: any server takes them, 8BITMIME or not), a Date, a From with the display
name, the Message-ID fixed at creation, In-Reply-To/References for replies and forwards. Bcc
recipients are envelope recipients only: never in the headers.

Also the reply rules the providers share: "Re: "/"Fwd: " subjects and the References chain.
"""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address, Group, HeaderRegistry
from email.message import EmailMessage
from email.utils import format_datetime
from functools import lru_cache


class _HeaderClasses(HeaderRegistry):
    """email's registry, making each kind of header's class once: the stock one builds a new
    class (type()) for every header set or parsed, a quarter of the time of building a
    message. Keyed by the kind (a handful), not the name: parsed mail has any names."""

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[type, type] = {}

    def __getitem__(self, name: str) -> type:
        kind = self.registry.get(name.lower(), self.default_class)
        made = self._made.get(kind)
        if made is None:
            made = self._made[kind] = type("_" + kind.__name__, (kind, self.base_class), {})
        return made


POLICY = email.policy.SMTP.clone(cte_type="7bit", header_factory=_HeaderClasses())
_TYPE = re.compile(r"^[A-Za-z0-9!#$&^_.+-]{1,127}/[A-Za-z0-9!#$&^_.+-]{1,127}$")
_REPLY_PREFIX = re.compile(r"^\s*(re|aw|sv)\s*:", re.I)
_FORWARD_PREFIX = re.compile(r"^\s*(fwd?|wg)\s*:", re.I)
MAX_REFERENCES = 50
_MSG_ID = re.compile(r"^<[\x21-\x3b\x3d\x3f-\x7e]+>$")


@dataclass(frozen=True)
class Person:
    name: str
    address: str


@dataclass(frozen=True)
class FilePart:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class MimeInput:
    sender: Person
    to: Sequence[Person]
    cc: Sequence[Person]
    subject: str
    text: str
    html: str
    message_id: str
    date: datetime
    in_reply_to: str = ""
    references: Sequence[str] = ()
    attachments: Sequence[FilePart] = ()


def _address(person: Person) -> Address:
    return Address(display_name=person.name, addr_spec=person.address)


def mime_build(mail: MimeInput) -> bytes:
    """The message as it goes on the wire (CRLF line ends).

    A message without attachments is its own headers followed by its content (the
    Content-* headers, MIME-Version and the encoded body, built by EmailMessage once for
    messages that share it: a batch to many people)."""
    if mail.attachments:
        return _message(mail).as_bytes(policy=POLICY)
    return _head(mail) + _content(mail.text, mail.html)


def _head(mail: MimeInput) -> bytes:
    """The header lines of `_headers(mail)`, byte for byte as EmailMessage writes them (a
    property test holds them equal), without building the message: a header whose text is
    already short plain ASCII (the common case) is written as it stands; any other is folded
    and encoded by the email package, one header at a time."""
    lines = [_line("Date", format_datetime(mail.date)), _from_line(mail.sender)]
    if mail.to:
        lines.append(_address_line("To", tuple(mail.to)))
    elif not mail.cc:
        lines.append(b"To: undisclosed-recipients:;\r\n")
    if mail.cc:
        lines.append(_address_line("Cc", tuple(mail.cc)))
    lines.append(_line("Subject", mail.subject))
    lines.append(_line("Message-ID", mail.message_id))
    if mail.in_reply_to:
        lines.append(_line("In-Reply-To", mail.in_reply_to))
    if mail.references:
        lines.append(_line("References", " ".join(mail.references)))
    return b"".join(lines)


# Header text that the email package writes unchanged: printable ASCII, no encoded-word
# look-alike, not starting or ending with a space, on one line of at most 78 characters.
_PLAIN = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")
# A display name written without quotes: atoms (no specials, no "=" or "?") one space apart.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+/^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/^_`{|}~-]+)*")
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
)


def _fits(name: str, text: str) -> bool:
    return len(name) + 2 + len(text) <= POLICY.max_line_length


def _line(name: str, text: str) -> bytes:
    if _fits(name, text) and _PLAIN.fullmatch(text) and "=?" not in text:
        return f"{name}: {text}\r\n".encode("ascii")
    return _folded(name, text)


def _folded(name: str, value: object) -> bytes:
    """NAME's line(s) as EmailMessage writes them (SMTP policy, 7-bit)."""
    return POLICY.fold_binary(*POLICY.header_store_parse(name, value))


def _plain_address(person: Person) -> str | None:
    if not _PLAIN_ADDRESS.fullmatch(person.address):
        return None
    if not person.name:
        return person.address
    return f"{person.name} <{person.address}>" if _PLAIN_NAME.fullmatch(person.name) else None


def _address_line(name: str, people: tuple[Person, ...]) -> bytes:
    plain = [_plain_address(p) for p in people]
    if None not in plain:
        text = ", ".join(plain)  # type: ignore[arg-type]
        if _fits(name, text):
            return f"{name}: {text}\r\n".encode("ascii")
    return _folded(name, [_address(p) for p in people])


@lru_cache(maxsize=256)
def _from_line(sender: Person) -> bytes:
    """The From line of SENDER, made once: a batch's messages share their sender."""
    return _address_line("From", (sender,))


@lru_cache(maxsize=32)
def _content(text: str, html: str) -> bytes:
    """The content part of a message without attachments: its headers, an empty line, its
    encoded body."""
    message = EmailMessage(policy=POLICY)
    _set_body(message, text, html)
    return message.as_bytes(policy=POLICY)


def _message(mail: MimeInput) -> EmailMessage:
    message = _headers(mail)
    _set_body(message, mail.text, mail.html)
    for part in mail.attachments:
        _attach(message, part)
    return message


def _set_body(message: EmailMessage, text: str, html: str) -> None:
    if html and text:
        message.set_content(text)
        message.add_alternative(html, subtype="html")
    elif html:
        message.set_content(html, subtype="html")
    else:
        message.set_content(text)


def _headers(mail: MimeInput) -> EmailMessage:
    """The message's own headers (no content yet)."""
    message = EmailMessage(policy=POLICY)
    message["Date"] = format_datetime(mail.date)
    message["From"] = _address(mail.sender)
    if mail.to:
        message["To"] = [_address(p) for p in mail.to]
    elif not mail.cc:
        message["To"] = Group("undisclosed-recipients")
    if mail.cc:
        message["Cc"] = [_address(p) for p in mail.cc]
    message["Subject"] = mail.subject
    message["Message-ID"] = mail.message_id
    if mail.in_reply_to:
        message["In-Reply-To"] = mail.in_reply_to
    if mail.references:
        message["References"] = " ".join(mail.references)
    return message


def _attach(message: EmailMessage, part: FilePart) -> None:
    content_type = part.content_type.lower() if _TYPE.match(part.content_type) else ""
    filename = part.filename or None
    if content_type == "message/rfc822":
        inner = email.message_from_bytes(part.data, policy=POLICY)
        message.add_attachment(inner, filename=filename)
        return
    if not content_type or content_type.startswith(("message/", "multipart/")):
        content_type = "application/octet-stream"
    maintype, subtype = content_type.split("/", 1)
    message.add_attachment(part.data, maintype=maintype, subtype=subtype, filename=filename)


def content_type_clean(value: str) -> str:
    """A client's content type if it is one (type/subtype), else application/octet-stream."""
    value = (value or "").split(";", 1)[0].strip()
    return value.lower() if _TYPE.match(value) else "application/octet-stream"


# Replies and forwards ----------------------------------------------------------------------
def reply_subject(subject: str) -> str:
    """SUBJECT with one "Re: " in front (none added when it already has one)."""
    subject = subject.strip()
    return subject if _REPLY_PREFIX.match(subject) else f"Re: {subject}"


def forward_subject(subject: str) -> str:
    subject = subject.strip()
    return subject if _FORWARD_PREFIX.match(subject) else f"Fwd: {subject}"


def reply_references(parent_id: str, parent_references: Iterable[str]) -> tuple[str, list[str]]:
    """(In-Reply-To, References) of an answer to the message PARENT_ID whose References are
    PARENT_REFERENCES: its chain plus itself, the first and the latest kept when long
    (RFC 5322 3.6.4)."""
    if not _MSG_ID.match(parent_id or ""):
        parent_id = ""
    chain = [r for r in parent_references or [] if _MSG_ID.match(r or "") and r != parent_id]
    if parent_id:
        chain.append(parent_id)
    if len(chain) > MAX_REFERENCES:
        chain = chain[:1] + chain[-(MAX_REFERENCES - 1) :]
    return parent_id, chain
