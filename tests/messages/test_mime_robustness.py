"""Conversion never raises, and reads what a mail client would show in awkward cases."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from messages import mime, mime_stream
from messages.mime import parse_message
from messages.mime_stream import SPLIT_MIN_BYTES, parse_message_bytes, parse_message_file
from tests.mailfactory import make_mail

RFC2231_CHARSET = (
    b"From: Ann <ann@example.org>\r\nTo: bob@example.com\r\nSubject: charset star\r\n"
    b"Message-ID: <rfc2231-charset@example.org>\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset*=us-ascii''utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n\r\n"
    b"Caf\xc3\xa9 at noon.\r\n"
)


def test_rfc2231_encoded_charset_is_read_not_raised():
    parsed = parse_message(RFC2231_CHARSET)
    assert parsed.body_text == "Café at noon.\n"
    assert parsed.defects == []


def test_rfc2231_charset_in_a_part_of_a_big_message():
    attachment = [("data.bin", "application/octet-stream", b"\x01" * (SPLIT_MIN_BYTES * 2))]
    raw = make_mail("big", attachments=attachment).replace(
        b'charset="utf-8"', b"charset*=utf-8''utf-8", 1
    )
    assert b"charset*=" in raw
    parsed = parse_message_bytes(raw)
    assert parsed.body_text == "Hello Alice,\nhow are you?\n"
    assert not [d for d in parsed.defects if "conversion failed" in d]


@pytest.fixture
def failing_parts(monkeypatch):
    def boom(msg, result):
        raise RuntimeError("bug in part reading")

    monkeypatch.setattr(mime, "_read_parts", boom)
    before = mime.conversion_failures["RuntimeError"]
    yield
    assert mime.conversion_failures["RuntimeError"] > before, "each failure is counted"


def assert_minimal_parse(parsed, raw: bytes):
    assert parsed.defects[0] == "conversion failed: RuntimeError: bug in part reading"
    assert parsed.subject == "Guarded" and parsed.from_address == "bob@example.org"
    assert parsed.message_id == "<guarded@example.org>"
    assert "how are you?" in parsed.body_text
    assert (parsed.size, parsed.sha256) == (len(raw), hashlib.sha256(raw).hexdigest())


def test_unexpected_error_in_conversion_gives_a_minimal_parse(failing_parts):
    raw = make_mail("Guarded", message_id="<guarded@example.org>")
    assert_minimal_parse(parse_message(raw), raw)


def test_unexpected_error_in_the_streamed_paths_gives_a_minimal_parse(failing_parts, tmp_path):
    payload = b"\x02" * (SPLIT_MIN_BYTES * 4)
    raw = make_mail(
        "Guarded",
        message_id="<guarded@example.org>",
        attachments=[("blob.bin", "application/octet-stream", payload)],
    )
    assert_minimal_parse(parse_message_bytes(raw), raw)
    path = tmp_path / "big.eml"
    path.write_bytes(raw)
    spill = tmp_path / "spill"
    spill.mkdir()
    assert_minimal_parse(parse_message_file(path, spill_dir=spill), raw)


def test_a_failing_stream_reader_falls_back_to_the_whole_parse(monkeypatch):
    def boom(self, *args, **kwargs):
        raise ValueError("reader bug")

    monkeypatch.setattr(mime_stream._Reader, "entity", boom)
    raw = make_mail("Reader", attachments=[("b.bin", "application/x-b", b"\x03" * 40_000)])
    parsed = parse_message_bytes(raw)
    assert parsed.subject == "Reader" and [a.size for a in parsed.attachments] == [40_000]
    assert parsed.defects == []


def test_inline_text_part_with_a_filename_is_the_body_when_there_is_no_other():
    raw = (
        b"From: a@example.org\r\nSubject: notes\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain; charset=utf-8; name=notes.txt\r\n"
        b"Content-Disposition: inline; filename=notes.txt\r\n\r\n"
        b"The minutes of the meeting.\r\n"
        b"--b\r\nContent-Type: text/plain; name=more.txt\r\n"
        b"Content-Disposition: inline; filename=more.txt\r\n\r\nSecond.\r\n--b--\r\n"
    )
    parsed = parse_message(raw)
    assert parsed.body_text == "The minutes of the meeting."
    assert parsed.snippet == "The minutes of the meeting."
    assert [(a.filename, a.is_inline) for a in parsed.attachments] == [
        ("notes.txt", True),
        ("more.txt", True),
    ]


def test_a_named_inline_text_part_is_not_the_body_when_there_is_one():
    raw = make_mail("body", attachments=[("log.txt", "text/plain", b"log line")])
    raw = raw.replace(b"Content-Disposition: attachment", b"Content-Disposition: inline")
    parsed = parse_message(raw)
    assert parsed.body_text == "Hello Alice,\nhow are you?\n"
    assert [a.filename for a in parsed.attachments] == ["log.txt"]


def test_raw_utf8_filename_rfc6532():
    raw = (
        b"From: a@example.org\r\nSubject: file\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        b'--b\r\nContent-Type: application/pdf; name="R\xc3\xa9sum\xc3\xa9 \xe2\x82\xac.pdf"\r\n'
        b'Content-Disposition: attachment; filename="R\xc3\xa9sum\xc3\xa9 \xe2\x82\xac.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--b--\r\n"
    )
    parsed = parse_message(raw)
    assert [a.filename for a in parsed.attachments] == ["Résumé €.pdf"]
    assert parsed.body_text == "see attached"


@pytest.mark.parametrize(
    ("charset", "subject"),
    [("windows-1251", "Отчёт за квартал"), ("iso-8859-2", "Žluťoučký kůň úpěl")],
)
def test_raw_8bit_legacy_subject_is_read_in_the_declared_charset(charset, subject):
    raw = (
        b"From: a@example.org\r\nSubject: "
        + subject.encode(charset)
        + b"\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset="
        + charset.encode()
        + b"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + subject.encode(charset)
        + b"\r\n"
    )
    parsed = parse_message(raw)
    assert parsed.subject == subject
    assert parsed.body_text == subject + "\n"


def test_raw_8bit_subject_without_a_declared_charset_is_detected():
    text = "Привет, как дела? Отчёт за квартал готов"
    raw = b"From: a@example.org\r\nSubject: " + text.encode("windows-1251") + b"\r\n\r\nhi\r\n"
    assert parse_message(raw).subject == text


@pytest.mark.parametrize(
    ("written", "year"),
    [("101", 2001), ("49", 2049), ("00", 2000), ("50", 1950), ("99", 1999), ("2026", 2026)],
)
def test_short_years_in_date_follow_rfc5322(written, year):
    raw = make_mail().replace(
        b"Date: ", b"Date: Mon, 5 Jan " + written.encode() + b" 10:00:00 +0000\r\nX-Old-Date: ", 1
    )
    parsed = parse_message(raw)
    assert parsed.date == datetime(year, 1, 5, 10, 0, tzinfo=UTC)
    assert not [d for d in parsed.defects if "Date" in d]


DSN = (
    b"From: MAILER-DAEMON@mx.example.org (Mail Delivery System)\r\n"
    b"To: alice@example.com\r\nSubject: Undelivered Mail Returned to Sender\r\n"
    b"Message-ID: <dsn-1@mx.example.org>\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\r\n\r\n'
    b"--r\r\nContent-Type: message/delivery-status\r\n\r\n"
    b"Reporting-MTA: dns; mx.example.org\r\nOriginal-Envelope-Id: env-42\r\n\r\n"
    b"Final-Recipient: rfc822; nobody@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    b"Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n\r\n"
    b"--r\r\nContent-Type: message/rfc822\r\n\r\n"
    b"From: alice@example.com\r\nTo: nobody@example.net\r\nSubject: lunch\r\n\r\nLunch?\r\n"
    b"--r--\r\n"
)


def test_delivery_status_fields_are_the_body_of_a_report_without_text():
    parsed = parse_message(DSN)
    assert "Final-Recipient: rfc822; nobody@example.net" in parsed.body_text
    assert "Action: failed" in parsed.body_text and "Status: 5.1.1" in parsed.body_text
    assert parsed.body_text.startswith("Reporting-MTA: dns; mx.example.org")
    assert parsed.snippet.startswith("Reporting-MTA")
    assert [a.content_type for a in parsed.attachments] == ["message/rfc822"]


def test_a_report_with_its_own_text_keeps_that_text_as_body():
    raw = DSN.replace(
        b"--r\r\nContent-Type: message/delivery-status",
        b"--r\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        b"--r\r\nContent-Type: message/delivery-status",
        1,
    )
    assert parse_message(raw).body_text == "Your message could not be delivered."
