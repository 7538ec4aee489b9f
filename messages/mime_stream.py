"""Big messages converted without holding them in memory.

The standard parser keeps every line of a message as a string and then joins them: about 7x
the message's size (a 72 MB mail peaked at 680 MB). A big message is therefore read line by
line from a file: each big non-text leaf part (the attachment that makes the message big) is
decoded straight into a temporary file and replaced by a short marker, and what remains
(headers, text bodies, small parts) goes through `parse_message` like any other mail. The
markers are then swapped for the spilled files, so the result is the same `ParsedMessage`,
with the same part paths, as if the whole message had been parsed in memory.

The part boundaries are found as the standard feedparser finds them (a line starting with
`--boundary`, of this part or of any enclosing one); what this reader does not recognise is
kept in the stripped message, so the worst case is the in-memory cost, never a lost part.
"""

from __future__ import annotations

import binascii
import hashlib
import io
import re
import secrets
import tempfile
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path
from typing import BinaryIO

from .mime import ParsedMessage, parse_message

SPILL_PART_BYTES = 256 * 1024  # inside a big message, non-text parts above this go to a file
READ_CHUNK = 64 * 1024  # longest piece of a line held at once (binary parts may lack newlines)
MAX_HEADER_BYTES = 1024 * 1024
MAX_DEPTH = 50
_SPILLABLE_ENCODINGS = frozenset({"base64", "7bit", "8bit", "binary"})
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/=]")
_HEADER_LINE = re.compile(rb"^[^\s:][^:]*:|^[ \t]")


def parse_message_file(path: Path, *, spill_dir: Path) -> ParsedMessage:
    """Parse the message in PATH; big parts are decoded into files under SPILL_DIR.

    The caller owns SPILL_DIR and removes it once the attachments are stored."""
    with path.open("rb") as source:
        reader = _Reader(source, spill_dir)
        reader.entity([], 0)
    parsed = parse_message(reader.out.getvalue())
    parsed.size = reader.size
    parsed.sha256 = reader.sha256.hexdigest()
    spills = {spill.marker: spill for spill in reader.spills}
    for attachment in parsed.attachments:
        spill = spills.pop(attachment.payload.rstrip(b"\r\n"), None)
        if spill is not None:
            attachment.payload = b""
            attachment.spill_path = str(spill.path)
            attachment.spill_size = spill.size
            attachment.sha256 = spill.sha256
    for spill in spills.values():
        parsed.defects.append(f"a {spill.size}-byte part could not be placed; kept in raw only")
    parsed.defects.extend(d for d in reader.defects if d not in parsed.defects)
    return parsed


@dataclass
class _Spill:
    marker: bytes
    path: Path
    size: int
    sha256: str


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
        self.defects: set[str] = set()

    def write(self, line: bytes) -> None:
        if self.base64:
            kept = _NOT_BASE64.sub(b"", line)
            if len(kept) != len(line.strip()):
                self.defects.add("InvalidBase64CharactersDefect")
            data = self.pending + kept
            whole = len(data) // 4 * 4
            self.pending = data[whole:]
            if whole:
                self._emit(binascii.a2b_base64(data[:whole]))
        else:
            # The newline before a boundary belongs to the boundary: hold the last line back.
            if self.pending:
                self._emit(self.pending)
            self.pending = line

    def finish(self, ended_by_boundary: bool) -> _Spill:
        tail = self.pending
        if self.base64 and tail:
            self.defects.add("InvalidBase64PaddingDefect")
            try:
                tail = binascii.a2b_base64(tail + b"=" * (-len(tail) % 4))
            except binascii.Error:
                self.defects.add("InvalidBase64LengthDefect")
                tail = b""
        elif ended_by_boundary:
            tail = _without_eol(tail)
        self._emit(tail)
        self.file.close()
        return _Spill(b"", self.path, self.size, self.hash.hexdigest())

    def _emit(self, data: bytes) -> None:
        self.file.write(data)
        self.hash.update(data)
        self.size += len(data)


class _Reader:
    """Copies a message to `out`, except big leaf parts, which go to `_PartFile`s."""

    def __init__(self, source: BinaryIO, spill_dir: Path) -> None:
        self.source = source
        self.spill_dir = spill_dir
        self.out = io.BytesIO()
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.at_line_start = True
        self.line_start = True  # whether the piece returned last began a line
        self.spills: list[_Spill] = []
        self.defects: list[str] = []
        self.token = secrets.token_hex(12)

    def next_piece(self) -> bytes | None:
        piece = self.source.readline(READ_CHUNK)
        if not piece:
            return None
        self.sha256.update(piece)
        self.size += len(piece)
        self.line_start = self.at_line_start
        self.at_line_start = piece.endswith(b"\n")
        return piece

    def ends_part(self, piece: bytes, boundaries: list[re.Pattern]) -> re.Match | None:
        if not self.line_start or not piece.startswith(b"--"):
            return None
        for boundary in reversed(boundaries):
            found = boundary.match(piece)
            if found:
                return found
        return None

    def entity(self, boundaries: list[re.Pattern], depth: int) -> bytes | None:
        """Copy one entity (headers and body); return the boundary line that ended it."""
        headers, piece, ended = self._headers(boundaries)
        if ended:
            return piece
        content_type = _content_type(headers)
        boundary = _boundary(headers) if content_type.startswith("multipart/") else None
        if boundary and depth < MAX_DEPTH:
            return self._multipart(boundary, boundaries, piece, depth)
        return self._leaf(headers, content_type, boundaries, piece)

    def _headers(self, boundaries: list[re.Pattern]) -> tuple[Message, bytes | None, bool]:
        lines: list[bytes] = []
        size = 0
        while True:
            piece = self.next_piece()
            if piece is None:
                break
            if self.ends_part(piece, boundaries):
                self._write_all(lines)
                return _parse_headers(lines), piece, True
            if piece in (b"\r\n", b"\n"):
                lines.append(piece)
                piece = self.next_piece()
                break
            if not _HEADER_LINE.match(piece) or size > MAX_HEADER_BYTES:
                break  # the body starts without a blank line (the parser notes the defect)
            lines.append(piece)
            size += len(piece)
        self._write_all(lines)
        return _parse_headers(lines), piece, False

    def _multipart(
        self, boundary: str, outer: list[re.Pattern], piece: bytes | None, depth: int
    ) -> bytes | None:
        own = _boundary_pattern(boundary)
        boundaries = [*outer, own]
        while piece is not None and not self.ends_part(piece, boundaries):  # preamble
            self.out.write(piece)
            piece = self.next_piece()
        while piece is not None:
            found = self.ends_part(piece, boundaries)
            if found is None or found.re is not own:
                return piece  # an enclosing part's boundary: this multipart ends here
            self.out.write(piece)
            if found.group("end"):
                piece = self.next_piece()
                while piece is not None and not self.ends_part(piece, outer):  # epilogue
                    self.out.write(piece)
                    piece = self.next_piece()
                return piece
            piece = self.entity(boundaries, depth + 1)
        return None

    def _leaf(
        self,
        headers: Message,
        content_type: str,
        boundaries: list[re.Pattern],
        piece: bytes | None,
    ) -> bytes | None:
        encoding = _encoding(headers)
        spillable = (
            content_type.split("/")[0] not in ("text", "multipart", "message")
            and encoding in _SPILLABLE_ENCODINGS
        )
        held: list[bytes] = []
        held_size = 0
        part_file: _PartFile | None = None
        eol = b"\r\n"  # the marker's line ending: the part's own
        while piece is not None and not self.ends_part(piece, boundaries):
            if part_file is not None:
                part_file.write(piece)
            else:
                held.append(piece)
                held_size += len(piece)
                if spillable and held_size > SPILL_PART_BYTES:
                    eol = b"\r\n" if held[0].endswith(b"\r\n") else b"\n"
                    part_file = _PartFile(encoding, self.spill_dir)
                    for line in held:
                        part_file.write(line)
                    held = []
            piece = self.next_piece()
        if part_file is None:
            self._write_all(held)
            return piece
        spill = part_file.finish(ended_by_boundary=piece is not None)
        self.defects.extend(sorted(part_file.defects - set(self.defects)))
        spill.marker = f"emailplatform-part-{self.token}-{len(self.spills)}".encode()
        self.spills.append(spill)
        if encoding == "base64":
            self.out.write(binascii.b2a_base64(spill.marker, newline=False) + eol)
        else:
            self.out.write(spill.marker + eol)
        return piece

    def _write_all(self, lines: list[bytes]) -> None:
        for line in lines:
            self.out.write(line)


def _without_eol(data: bytes) -> bytes:
    if data.endswith(b"\r\n"):
        return data[:-2]
    if data.endswith((b"\n", b"\r")):
        return data[:-1]
    return data


def _boundary_pattern(boundary: str) -> re.Pattern:
    """The feedparser's delimiter test: `--boundary`, optional `--`, blanks, end of line."""
    separator = re.escape(("--" + boundary).encode("ascii", "surrogateescape"))
    return re.compile(separator + rb"(?P<end>--)?[ \t]*(?:\r\n|\n|\r)?$")


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
