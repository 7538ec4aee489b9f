"""Property: mutated corpus mail converts without an exception, and its raw identity is kept.

Byte mutations (flips, insertions of bytes that matter to MIME, deletions, truncation) and
structure mutations (hostile header lines inserted, lines dropped or repeated, boundaries
renamed) of the corpus go through every conversion path. Derandomized and bounded: the same
examples each run, in a few seconds.
"""

from __future__ import annotations

import hashlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from messages.mime import parse_message
from messages.mime_stream import parse_message_bytes, parse_message_file
from tests.conftest import corpus_files

CORPUS = [path.read_bytes() for path in corpus_files()]
FUZZ = settings(
    max_examples=100,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

SPECIAL_BYTES = [
    b"\x00",
    b"\xff",
    b"\xc3",
    b"\r",
    b"\n",
    b"\r\n\r\n",
    b"=?",
    b"?=",
    b"--",
    b";",
    b'"',
    b"\\",
    b"*=",
    b"%",
    b"\xed\xa0\x80",
]
HOSTILE_HEADERS = [
    b"Content-Type: text/plain; charset*=us-ascii''utf-8",
    b"Content-Type: text/plain; charset*0*=utf-8''%E2; charset*1*=%82",
    b'Content-Type: text/plain; charset="\xff\xfe"',
    b"Content-Type: text/html; charset=base64",
    b"Content-Type: text/plain; charset=idna",
    b"Content-Type: multipart/mixed",
    b"Content-Type: multipart/mixed; boundary=",
    b"Content-Type: message/rfc822",
    b"Content-Type: message/delivery-status",
    b"Content-Type: message/global-delivery-status",
    b"Content-Type: application/octet-stream; name*=x''%FF%FE",
    b"Content-Disposition: inline; filename*=utf-8''%C3%A9t%C3%A9.txt",
    b'Content-Disposition: attachment; filename="\xe2\x82\xac.pdf"',
    b"Content-Disposition: =?utf-8?q?broken",
    b"Content-Transfer-Encoding: base64",
    b"Content-Transfer-Encoding: quoted-printable",
    b"Content-Transfer-Encoding: x-uuencode",
    b"Subject: =?x-unknown?B?////?=",
    b"Subject: =?utf-8?B?not base64!?=",
    b'From: "\xc0\xc1" <@@>',
    b'To: ,,,;<>;"',
    b"Date: Mon, 5 Jan 101 10:00:00 +9999",
    b"Date: 31 Feb 0 99:99:99",
    b"Message-ID: " + b"<" + b"x" * 2000 + b">",
    b"References: <a@b> <",
]


@st.composite
def byte_mutated(draw) -> bytes:
    raw = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(raw)))
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if kind == "flip" and at < len(raw):
            raw[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            raw[at:at] = draw(st.sampled_from(SPECIAL_BYTES))
        elif kind == "delete":
            del raw[at : at + draw(st.integers(1, 64))]
        elif kind == "truncate" and draw(st.booleans()):
            del raw[at:]
    return bytes(raw)


@st.composite
def structure_mutated(draw) -> bytes:
    lines = draw(st.sampled_from(CORPUS)).split(b"\n")
    for _ in range(draw(st.integers(1, 5))):
        at = draw(st.integers(0, len(lines)))
        kind = draw(st.sampled_from(["header", "drop", "repeat", "boundary"]))
        if kind == "header":
            lines.insert(at, draw(st.sampled_from(HOSTILE_HEADERS)) + b"\r")
        elif kind == "drop" and at < len(lines):
            del lines[at]
        elif kind == "repeat" and at < len(lines):
            lines[at:at] = [lines[at]] * draw(st.integers(1, 3))
        elif kind == "boundary":
            boundaries = [line for line in lines if line.startswith(b"--") and len(line) > 4]
            if boundaries:
                old = draw(st.sampled_from(boundaries)).rstrip(b"\r-")
                new = draw(st.sampled_from([b"--", b"--x", old + b"y", old[:3]]))
                lines = [line.replace(old, new) for line in lines]
    return b"\n".join(lines)


def assert_converted(raw: bytes, tmp_path) -> None:
    identity = (len(raw), hashlib.sha256(raw).hexdigest())
    for parsed in (parse_message(raw), parse_message_bytes(raw)):
        assert (parsed.size, parsed.sha256) == identity
        assert not [d for d in parsed.defects if d.startswith("conversion failed")]
        for text in (parsed.subject, parsed.body_text, parsed.body_html, parsed.from_name):
            text.encode("utf-8")  # storable: no surrogates
            assert "\x00" not in text
    path = tmp_path / "message.eml"
    path.write_bytes(raw)
    spill = tmp_path / "spill"
    spill.mkdir(exist_ok=True)
    parsed = parse_message_file(path, spill_dir=spill)
    assert (parsed.size, parsed.sha256) == identity


@FUZZ
@given(raw=byte_mutated())
def test_byte_mutations_of_the_corpus_convert(raw, tmp_path):
    assert_converted(raw, tmp_path)


@FUZZ
@given(raw=structure_mutated())
def test_structure_mutations_of_the_corpus_convert(raw, tmp_path):
    assert_converted(raw, tmp_path)
