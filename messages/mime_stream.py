"""Messages with big parts, converted without the standard parser reading those parts.

The standard parser handles a message line by line in Python and keeps every line as a
string: slow on attachments (most of a mailbox's bytes) and about 7x the message's size in
memory (a 72 MB mail peaked at 680 MB). Here the MIME structure is walked with regular
expressions over the bytes: each big non-text leaf part (an attachment) is cut out, decoded
on its own, and replaced by a short marker; what remains (headers, text bodies, small parts)
goes through `parse_message` as any other mail, and the markers are swapped back for the
decoded parts. The result is the same `ParsedMessage`, with the same part paths, as parsing
the whole message (tests compare them over the corpus).

Two sources: bytes in memory (`parse_message_bytes`: parts are decoded by the standard
library, only faster), and a file (`parse_message_file`, for messages too big to hold: the
file is read through a bounded window, and big parts are decoded into files as they stream).

Part boundaries are found as the feedparser finds them (a line `--boundary`, of this part or
of an enclosing one, optionally followed by `--` and blanks). Whatever this reader does not
recognise stays in the stripped message, so the worst case is the standard parser's cost.
"""

from __future__ import annotations

import binascii
import email
import hashlib
import io
import re
import secrets
import tempfile
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path
from typing import BinaryIO

from .mime import ParsedMessage, conversion_failed, parse_message, read_message

SPLIT_MIN_BYTES = 16 * 1024  # smaller messages go straight to the standard parser
SPILL_PART_BYTES = 32 * 1024  # non-text leaf parts above this are cut out and decoded alone
WINDOW_BYTES = 1024 * 1024  # of a file, read at a time
MAX_HEADER_BYTES = 256 * 1024
MAX_DEPTH = 50
_SPILLABLE_ENCODINGS = frozenset({"base64", "7bit", "8bit", "binary"})
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/=]")
_HEADER_LINE = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:|[\t ]")  # the feedparser's headerRE
_DELIMITER_TAIL = re.compile(rb"(--)?[ \t]*(?:\r\n|\n|\r?\Z)")


def parse_message_bytes(raw: bytes) -> ParsedMessage:
    """`parse_message(raw)`, faster on mail with attachments. Never raises."""
    if len(raw) < SPLIT_MIN_BYTES or raw.count(b"\r") != raw.count(b"\r\n"):
        return parse_message(raw)  # small, or lines the feedparser would split at a lone CR
    try:
        reader = _Reader(raw=raw)
        reader.entity()
        parsed = _finish(reader, len(raw), hashlib.sha256(raw).hexdigest())
    except Exception:  # this reader's own failure: the standard parser's guarded path decides
        return parse_message(raw)
    # A part the parser did not see where this reader did: the structure is too unusual.
    return parsed if parsed is not None and not reader.unplaced else parse_message(raw)


def parse_message_file(path: Path, *, spill_dir: Path) -> ParsedMessage:
    """Parse the message in PATH, holding at most a window of it and its small parts.

    Big parts are decoded into files under SPILL_DIR; the caller owns SPILL_DIR and removes it
    once the attachments are stored. Never raises but for OSError reading PATH: an unexpected
    failure gives `conversion_failed`'s minimal parse of the message's head."""
    try:
        with path.open("rb") as source:
            reader = _Reader(source=source, spill_dir=spill_dir)
            reader.entity()
        parsed = _finish(reader, reader.size, reader.hash.hexdigest())
    except OSError:
        raise
    except Exception as exc:
        return file_conversion_failed(path, exc)
    if parsed is None:
        parsed = ParsedMessage(size=reader.size, sha256=reader.hash.hexdigest())
        parsed.defects.append("unparseable message; kept in raw only")
    return parsed


def file_conversion_failed(path: Path, exc: Exception) -> ParsedMessage:
    """`conversion_failed` for the message in PATH, read once for its head and its hash."""
    digest = hashlib.sha256()
    size = 0
    head = b""
    with path.open("rb") as source:
        while chunk := source.read(WINDOW_BYTES):
            if not head:
                head = chunk
            digest.update(chunk)
            size += len(chunk)
    return conversion_failed(head, exc, size=size, sha256=digest.hexdigest())


def _finish(reader: _Reader, size: int, sha256: str) -> ParsedMessage | None:
    """Parse the stripped message, put the cut-out bodies back, read it; None when the
    standard parser fails on the stripped message (the caller falls back)."""
    try:
        msg = email.message_from_bytes(reader.out.getvalue(), policy=compat32)
    except Exception:
        return None
    cut = {part.written.decode("ascii"): part for part in reader.parts}
    spilled: dict[bytes, _CutPart] = {}
    for part in _leaves(msg):
        payload = part.get_payload()
        found = cut.pop(payload.rstrip("\r\n"), None) if isinstance(payload, str) else None
        if found is None:
            continue
        if found.path is None:
            part.set_payload(found.body.decode("ascii", "surrogateescape"))
        else:
            spilled[found.marker] = found
    parsed = ParsedMessage(size=size, sha256=sha256)
    read_message(msg, parsed)
    for attachment in parsed.attachments:
        found = spilled.pop(attachment.payload.rstrip(b"\r\n"), None)
        if found is not None:
            attachment.payload = b""
            attachment.sha256 = found.sha256
            attachment.spill_path = str(found.path)
            attachment.spill_size = found.size
    reader.unplaced = [*cut.values(), *spilled.values()]
    for part in reader.unplaced:
        parsed.defects.append(f"a {part.size}-byte part could not be placed; kept in raw only")
    parsed.defects.extend(d for d in dict.fromkeys(reader.defects) if d not in parsed.defects)
    return parsed


def _leaves(msg: Message):
    stack = [msg]
    while stack:
        part = stack.pop()
        payload = part.get_payload()
        if isinstance(payload, list):
            stack.extend(payload)
        else:
            yield part


@dataclass
class _Delimiter:
    start: int
    end: int
    boundary: str
    close: bool
    line: bytes = b""


@dataclass
class _CutPart:
    marker: bytes
    written: bytes  # what stands for the part in the stripped message (the marker, encoded)
    size: int
    sha256: str
    body: bytes = b""  # the body as it is in the message, put back after parsing ...
    path: Path | None = None  # ... or, big and decoded, in this file
    defects: list[str] = field(default_factory=list)


class _PartFile:
    """One part's body, decoded as its Content-Transfer-Encoding says, into a file."""

    def __init__(self, encoding: str, spill_dir: Path) -> None:
        self.base64 = encoding == "base64"
        handle, name = tempfile.mkstemp(dir=spill_dir, suffix=".part")
        self.path = Path(name)
        self.file = open(handle, "wb")  # noqa: SIM115 (closed in finish)
        self.hash = hashlib.sha256()
        self.size = 0
        self.pending = b""
        self.defects: list[str] = []

    def write(self, data: bytes) -> None:
        if self.base64:
            kept = data.translate(None, b"\r\n")
            if kept.translate(None, _BASE64_ALPHABET):  # anything else: dropped, and noted
                kept = _NOT_BASE64.sub(b"", kept)
                self._defect("InvalidBase64CharactersDefect")
            data = self.pending + kept
            whole = len(data) // 4 * 4
            self.pending = data[whole:]
            if whole:
                self._emit(binascii.a2b_base64(data[:whole]))
        else:
            # The newline before a boundary belongs to the boundary: hold the end back.
            self._emit(self.pending)
            self.pending = data

    def finish(self, strip_eol: bool) -> _CutPart:
        tail = self.pending
        if self.base64 and tail:
            self._defect("InvalidBase64PaddingDefect")
            try:
                tail = binascii.a2b_base64(tail + b"=" * (-len(tail) % 4))
            except binascii.Error:
                self._defect("InvalidBase64LengthDefect")
                tail = b""
        elif not self.base64 and strip_eol:
            tail = _without_eol(tail)
        self._emit(tail)
        self.file.close()
        return _CutPart(
            b"", b"", self.size, self.hash.hexdigest(), path=self.path, defects=self.defects
        )

    def _emit(self, data: bytes) -> None:
        self.file.write(data)
        self.hash.update(data)
        self.size += len(data)

    def _defect(self, name: str) -> None:
        if name not in self.defects:
            self.defects.append(name)


class _Reader:
    """Copies a message to `out`, except big leaf parts, which become `_CutPart`s.

    `buf[pos:]` is what is not read yet: the whole rest of the message in memory, or, from a
    file, a window that `_more` slides forward (hashing what it reads)."""

    def __init__(
        self,
        *,
        raw: bytes | None = None,
        source: BinaryIO | None = None,
        spill_dir: Path | None = None,
    ) -> None:
        self.buf = raw if raw is not None else b""
        self.pos = 0
        self.source = source
        self.eof = source is None
        self.spill_dir = spill_dir
        self.hash = hashlib.sha256()
        self.size = len(self.buf)
        self.out = io.BytesIO()
        self.parts: list[_CutPart] = []
        self.unplaced: list[_CutPart] = []
        self.defects: list[str] = []
        self.token = secrets.token_hex(12)
        self.eol = b"\n"  # the message's line ending, for the markers

    # Reading -----------------------------------------------------------------------------
    def _more(self) -> bool:
        """Read the next window of the file; False at its end."""
        if self.eof:
            return False
        chunk = self.source.read(WINDOW_BYTES)
        if not chunk:
            self.eof = True
            return False
        self.hash.update(chunk)
        self.size += len(chunk)
        self.buf = self.buf[self.pos :] + chunk
        self.pos = 0
        return True

    def _line(self) -> bytes | None:
        while True:
            end = self.buf.find(b"\n", self.pos)
            if end >= 0:
                line = self.buf[self.pos : end + 1]
                self.pos = end + 1
                return line
            if len(self.buf) - self.pos > MAX_HEADER_BYTES or not self._more():
                line = self.buf[self.pos :]
                self.pos = len(self.buf)
                return line or None

    def _find_delimiter(
        self, boundaries: tuple[str, ...], start: int, end: int
    ) -> _Delimiter | None:
        """The first delimiter line of BOUNDARIES starting in buf[start:end]."""
        best: _Delimiter | None = None
        for boundary in boundaries:
            needle = b"--" + boundary.encode("ascii", "surrogateescape")
            at = self.buf.find(needle, start, end)
            while at >= 0 and (best is None or at < best.start):
                if at == 0 or self.buf[at - 1] == 10:  # at the start of a line
                    tail = _DELIMITER_TAIL.match(self.buf, at + len(needle), end)
                    if tail is not None:
                        best = _Delimiter(at, tail.end(), boundary, tail.group(1) is not None)
                        break
                at = self.buf.find(needle, at + 1, end)
        return best

    def _body(self, boundaries: tuple[str, ...], sink) -> _Delimiter | None:
        """Pass the body up to the next delimiter line of BOUNDARIES to SINK, in pieces; return
        that line (consumed), or None at the end of the message."""
        while True:
            complete = len(self.buf) if self.eof else self.buf.rfind(b"\n", self.pos) + 1
            found = None
            if boundaries and complete > self.pos:
                found = self._find_delimiter(boundaries, self.pos, complete)
            if found is not None:
                sink(self.buf[self.pos : found.start])
                found.line = self.buf[found.start : found.end]
                self.pos = found.end
                return found
            if self.eof:
                sink(self.buf[self.pos :])
                self.pos = len(self.buf)
                return None
            if complete > self.pos:
                sink(self.buf[self.pos : complete])
                self.pos = complete
            elif len(self.buf) - self.pos > WINDOW_BYTES:  # a line longer than a window
                sink(self.buf[self.pos :])  # cannot be a delimiter: none are that long
                self.pos = len(self.buf)
            self._more()

    # Structure ---------------------------------------------------------------------------
    def entity(
        self, boundaries: tuple[str, ...] = (), depth: int = 0, in_digest: bool = False
    ) -> _Delimiter | None:
        """Copy one entity (headers and body); return the delimiter line that ended it."""
        headers, ended = self._headers(boundaries)
        if ended is not None:
            return ended
        if in_digest:
            headers.set_default_type("message/rfc822")
        content_type = _content_type(headers)
        boundary = _boundary(headers) if content_type.startswith("multipart/") else None
        if boundary and depth < MAX_DEPTH:
            return self._multipart(boundary, boundaries, depth, content_type)
        return self._leaf(headers, content_type, boundaries)

    def _headers(self, boundaries: tuple[str, ...]) -> tuple[Message, _Delimiter | None]:
        lines: list[bytes] = []
        while True:
            line = self._line()
            if line is None:
                break
            if not lines and line.endswith(b"\r\n"):
                self.eol = b"\r\n"
            ended = None
            if boundaries and line.startswith(b"--"):  # the line is buf[pos - len(line):pos]
                ended = self._find_delimiter(boundaries, self.pos - len(line), self.pos)
                if ended is not None:
                    ended.line = line
            if ended is not None:
                self.out.write(b"".join(lines))
                return _parse_headers(lines), ended
            if line in (b"\r\n", b"\n"):
                lines.append(line)
                break
            if not _HEADER_LINE.match(line):
                self.pos -= len(line)  # the body starts without a blank line (a defect)
                break
            lines.append(line)
        self.out.write(b"".join(lines))
        return _parse_headers(lines), None

    def _multipart(
        self, boundary: str, outer: tuple[str, ...], depth: int, content_type: str
    ) -> _Delimiter | None:
        boundaries = (*outer, boundary)
        found = self._body(boundaries, self.out.write)  # the preamble
        while found is not None:
            if found.boundary != boundary:
                return found  # an enclosing part's delimiter: this multipart ends here
            self.out.write(found.line)
            if found.close:
                return self._body(outer, self.out.write)  # the epilogue
            found = self.entity(boundaries, depth + 1, content_type == "multipart/digest")
        return None

    def _leaf(
        self, headers: Message, content_type: str, boundaries: tuple[str, ...]
    ) -> _Delimiter | None:
        """A leaf's body is cut out: the parser sees a marker, and the body is put back after
        (decoded into a file instead when it is a big attachment of a message from a file)."""
        maintype = content_type.split("/")[0]
        if maintype in ("message", "multipart"):  # parsed further by the standard parser
            return self._body(boundaries, self.out.write)
        encoding = _encoding(headers)
        spillable = (
            self.spill_dir is not None and maintype != "text" and encoding in _SPILLABLE_ENCODINGS
        )
        held: list[bytes] = []
        state: dict = {"held": 0, "file": None}

        def sink(data: bytes) -> None:
            if state["file"] is not None:
                state["file"].write(data)
                return
            held.append(data)
            state["held"] += len(data)
            if spillable and state["held"] > SPILL_PART_BYTES:
                state["file"] = _PartFile(encoding, self.spill_dir)
                state["file"].write(b"".join(held))
                held.clear()

        found = self._body(boundaries, sink)
        # In a multipart, the parser gives the newline before the next delimiter (or before
        # the end, when the closing one is missing) to the delimiter, not to the part.
        in_multipart = bool(boundaries)
        marker = f"emailplatform-part-{self.token}-{len(self.parts)}".encode()
        written = marker
        if state["file"] is not None:
            part = state["file"].finish(strip_eol=in_multipart)
            self.defects.extend(part.defects)
            if encoding == "base64":  # decoded by the reader, it must give the marker back
                written = binascii.b2a_base64(marker, newline=False)
        elif self.source is not None or not any(held):  # from a file, small parts stay as is
            self.out.write(b"".join(held))
            return found
        else:
            body = b"".join(held)
            if in_multipart:
                body = _without_eol(body)
            part = _CutPart(marker, marker, len(body), "", body=body)
        part.marker, part.written = marker, written
        self.parts.append(part)
        self.out.write(written + self.eol)
        return found


def _without_eol(data: bytes) -> bytes:
    if data.endswith(b"\r\n"):
        return data[:-2]
    if data.endswith((b"\n", b"\r")):
        return data[:-1]
    return data


def _parse_headers(lines: list[bytes]) -> Message:
    return BytesHeaderParser(policy=compat32).parsebytes(b"".join(lines))


def _content_type(headers: Message) -> str:
    try:
        return headers.get_content_type()
    except Exception:
        return "application/octet-stream"


def _boundary(headers: Message) -> str | None:
    try:
        return headers.get_boundary()
    except Exception:
        return None


def _encoding(headers: Message) -> str:
    """As `Message.get_payload(decode=True)` reads it (unstripped: "base64 " is not base64)."""
    return str(headers.get("Content-Transfer-Encoding", "7bit")).lower()
