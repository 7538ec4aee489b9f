"""Big messages parsed from a file: the same result as in memory, without the memory."""

from __future__ import annotations

import base64
import hashlib
import os
import tracemalloc
from pathlib import Path

import pytest

from messages import mime_stream
from messages.mime import parse_message
from messages.mime_stream import parse_message_bytes, parse_message_file
from tests.conftest import corpus_files
from tests.mailfactory import make_mail


def summary(parsed) -> dict:
    return {
        "headers": (parsed.subject, parsed.message_id, parsed.from_address, parsed.date),
        "bodies": (parsed.body_text, parsed.body_html, parsed.snippet),
        "raw": (parsed.size, parsed.sha256),
        "defects": parsed.defects,
        "attachments": [
            (
                a.part_path,
                a.filename,
                a.content_type,
                a.content_id,
                a.is_inline,
                a.size,
                a.sha256,
                hashlib.sha256(a.open().read()).hexdigest(),
            )
            for a in parsed.attachments
        ],
    }


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name)
def test_every_corpus_message_parses_as_the_standard_parser_has_it(path, tmp_path, monkeypatch):
    monkeypatch.setattr(mime_stream, "SPLIT_MIN_BYTES", 0)  # every message through the reader
    monkeypatch.setattr(mime_stream, "SPILL_PART_BYTES", 64)  # every non-text part to a file
    expected = summary(parse_message(path.read_bytes()))
    assert summary(parse_message_bytes(path.read_bytes())) == expected
    assert summary(parse_message_file(path, spill_dir=tmp_path)) == expected
    monkeypatch.setattr(mime_stream, "WINDOW_BYTES", 97)  # lines and delimiters across windows
    assert summary(parse_message_file(path, spill_dir=tmp_path)) == expected


def test_corpus_parts_were_really_read_from_files(tmp_path, monkeypatch):
    monkeypatch.setattr(mime_stream, "SPILL_PART_BYTES", 64)
    spilled = 0
    for path in corpus_files():
        parsed = parse_message_file(path, spill_dir=tmp_path)
        spilled += sum(1 for a in parsed.attachments if a.spill_path and not a.payload)
    assert spilled >= 20


def big_mail(tmp_path: Path, payload: bytes, *, eol: str = "\r\n") -> Path:
    boundary = "=_outer"
    head = eol.join(
        [
            "From: Carol <carol@example.org>",
            "To: Alice <alice@example.com>",
            "Subject: The recording",
            "Message-ID: <big-1@example.org>",
            "Date: Mon, 05 Jan 2026 09:00:00 +0000",
            "MIME-Version: 1.0",
            f'Content-Type: multipart/mixed; boundary="{boundary}"',
            "",
            f"--{boundary}",
            'Content-Type: multipart/alternative; boundary="=_inner"',
            "",
            "--=_inner",
            "Content-Type: text/plain; charset=utf-8",
            "",
            "The recording is attached.",
            "--=_inner",
            "Content-Type: text/html; charset=utf-8",
            "",
            "<p>The recording is <b>attached</b>.</p>",
            "--=_inner--",
            f"--{boundary}",
            'Content-Type: video/mp4; name="all-hands.mp4"',
            'Content-Disposition: attachment; filename="all-hands.mp4"',
            "Content-Transfer-Encoding: base64",
            "",
            "",
        ]
    )
    path = tmp_path / "big.eml"
    with path.open("wb") as f:
        f.write(head.encode())
        for start in range(0, len(payload), 57 * 1000):
            chunk = payload[start : start + 57 * 1000]
            f.write(base64.encodebytes(chunk).replace(b"\n", eol.encode()))
        f.write(f"--{boundary}--{eol}".encode())
    return path


@pytest.mark.parametrize("eol", ["\r\n", "\n"])
def test_a_big_attachment_is_decoded_to_a_file_without_holding_the_message(
    tmp_path, eol, monkeypatch
):
    """Memory follows the reading window, not the message."""
    monkeypatch.setattr(mime_stream, "WINDOW_BYTES", 64 * 1024)
    payload = os.urandom(12 * 1024 * 1024)
    path = big_mail(tmp_path, payload, eol=eol)
    tracemalloc.start()
    try:
        parsed = parse_message_file(path, spill_dir=tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024, f"peak {peak} bytes for a {path.stat().st_size}-byte mail"
    assert (parsed.subject, parsed.body_text) == ("The recording", "The recording is attached.")
    assert "<b>attached</b>" in parsed.body_html
    [video] = parsed.attachments
    assert (video.filename, video.content_type, video.part_path) == (
        "all-hands.mp4",
        "video/mp4",
        "2",
    )
    assert video.size == len(payload)
    assert video.sha256 == hashlib.sha256(payload).hexdigest()
    assert Path(video.spill_path).read_bytes() == payload
    assert parsed.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert parsed.size == path.stat().st_size
    assert parsed.defects == []


def test_binary_parts_keep_their_exact_bytes(tmp_path, monkeypatch):
    """An 8bit part ends where its boundary's line break begins, as the parser has it."""
    monkeypatch.setattr(mime_stream, "SPILL_PART_BYTES", 1024)
    payload = bytes(range(256)).replace(b"\n", b"") * 40 + b"\nlast line\n\n"
    raw = make_mail("Binary", attachments=[("blob.bin", "application/octet-stream", b"x")])
    boundary = raw.split(b'boundary="', 1)[1].split(b'"', 1)[0]
    head, tail = raw.rsplit(b"--" + boundary + b"\n", 1)[0], f"--{boundary.decode()}--\n"
    raw = (
        head
        + b"--"
        + boundary
        + b"\nContent-Type: application/octet-stream\n"
        + b"Content-Transfer-Encoding: 8bit\n\n"
        + payload
        + b"\n"
        + tail.encode()
    )
    path = tmp_path / "m.eml"
    path.write_bytes(raw)
    streamed = parse_message_file(path, spill_dir=tmp_path)
    assert summary(streamed) == summary(parse_message(raw))
    assert streamed.attachments[-1].spill_path and streamed.attachments[-1].open().read() == payload


def test_a_part_whose_boundary_never_comes_is_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(mime_stream, "SPILL_PART_BYTES", 1024)
    data = os.urandom(50_000)
    raw = (
        b'Subject: cut\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(data).replace(b"\n", b"\r\n")
    )
    path = tmp_path / "cut.eml"
    path.write_bytes(raw)
    streamed = parse_message_file(path, spill_dir=tmp_path)
    assert summary(streamed) == summary(parse_message(raw))
    assert streamed.attachments[0].open().read() == data
    assert "CloseBoundaryNotFoundDefect" in streamed.defects
