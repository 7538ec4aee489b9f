"""The converter reads what a person would see in a mail client, and survives broken mail."""

from datetime import UTC, datetime

from messages.mime import parse_message
from tests.conftest import CORPUS_DIR, corpus_files
from tests.mailfactory import make_mail


def parse_corpus(name: str):
    return parse_message((CORPUS_DIR / name).read_bytes())


def test_simple_attachment_fields_hand_checked():
    parsed = parse_corpus("james-mime4j/simple-attachment.msg")
    assert parsed.subject == "Here is the attachment I was waiting for."
    assert (parsed.from_name, parsed.from_address) == ("Foo Bar", "bar@example.com")
    assert parsed.to == [{"name": "", "address": "foo@example.com"}]
    assert parsed.date == datetime(2007, 4, 27, 14, 8, 23, tzinfo=UTC)
    assert parsed.body_text.strip() == "Body."
    assert [(a.filename, a.content_type, a.size) for a in parsed.attachments] == [
        ("data.bin", "application/octet-stream", 1024)
    ]
    assert parsed.defects == []


def test_two_gifs_hand_checked():
    parsed = parse_corpus("james-mime4j/multi-2gifs.msg")
    assert parsed.subject == "Two images for you..."
    assert parsed.from_address == "eryq@rhine.gsfc.nasa.gov"
    assert parsed.date == datetime(1996, 4, 11, 6, 10, 30, tzinfo=UTC)
    assert [a.filename for a in parsed.attachments] == ["3d-compress.gif", "3d-eye.gif"]
    assert all(a.content_type == "image/gif" for a in parsed.attachments)
    assert parsed.body_text.startswith("When unpacked, this message should produce two GIF files")


def test_utf8_headers_rfc6532():
    parsed = parse_corpus("mikel-mail/rfc6532/utf8_headers.eml")
    assert parsed.subject == "Säying Hello"
    assert parsed.from_name == "Jöhn Doe"
    assert parsed.from_address == "jdöe@mächine.example"


def test_broken_boundary_keeps_the_text_and_records_defects():
    parsed = parse_corpus("james-mime4j/badbound.msg")
    assert parsed.subject == "Mail System Error - Returned Mail"
    assert "StartBoundaryNotFoundDefect" in parsed.defects
    assert "returned" in parsed.body_text.lower() or len(parsed.body_text) > 100


def test_deeply_nested_message_does_not_crash():
    parsed = parse_corpus("mimekit/stack-overflow.txt")
    assert parsed.subject == "Message Subject"
    assert "Message Body" in parsed.body_text


def test_every_corpus_file_parses_without_raising():
    files = corpus_files()
    assert len(files) > 200
    damaged = [f for f in files if parse_message(f.read_bytes()).defects]
    assert damaged, "the corpus holds broken mail; the parser must notice some of it"


def test_bad_date_is_a_defect_not_a_crash():
    raw = make_mail().replace(b"Date: ", b"Date: not a date at all ", 1)
    parsed = parse_message(raw)
    assert parsed.date is None
    assert any("Date header" in d for d in parsed.defects)


def test_unknown_charset_decoded_leniently():
    raw = (
        b"From: a@example.com\r\nSubject: charset\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=x-no-such-charset\r\n\r\nHello \xff world\r\n"
    )
    parsed = parse_message(raw)
    assert "Hello" in parsed.body_text and "world" in parsed.body_text
    assert any("charset" in d for d in parsed.defects)


def test_html_only_message_gets_text_and_snippet():
    raw = (
        b"From: a@example.com\r\nSubject: html\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n"
        b"<p>Hi <b>there</b> &amp; welcome<script>alert(1)</script></p>\r\n"
    )
    parsed = parse_message(raw)
    assert "<b>there</b>" in parsed.body_html
    assert parsed.body_text.strip() == "Hi there & welcome"
    assert parsed.snippet == "Hi there & welcome"


def test_message_ids_and_references():
    raw = make_mail(
        message_id="<c@example.org>",
        in_reply_to="<b@example.org>",
        references=["<a@example.org>", "<b@example.org>"],
    )
    parsed = parse_message(raw)
    assert parsed.message_id == "<c@example.org>"
    assert parsed.in_reply_to == "<b@example.org>"
    assert parsed.references == ["<a@example.org>", "<b@example.org>"]
