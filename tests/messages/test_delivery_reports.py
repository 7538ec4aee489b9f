"""Delivery reports read from raw mail: the corpus's DSNs, damaged ones, non-standard bounces."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from messages.delivery_reports import report_candidate, report_parse
from messages.mime import parse_message
from tests.conftest import CORPUS_DIR, corpus_files
from tests.mailfactory import make_mail

GMAIL_550 = "gmail-smtp-in.l.google.com"
BOUNCE1_TO = [
    "bbbbvhvbbvkjbhfbvbvjhb@gmail.com",
    "bscdbcjhasbcjhbdscbhbsdhcbj@gmail.com",
    "egyfefsdvsfvvhjsd@gmail.com",
    "kfhejkfbsjkjsbhds@gmail.com",
    "qfvhgsvhgsduiohncdhcvhsdfvsfygusd@gmail.com",
]

# file -> (reporting MTA, returned Message-ID, [(recipient, action, status, remote MTA)])
CORPUS_DSNS = {
    "mikel-mail/multipart_report_emails/multi_address_bounce1.eml": (
        "lvmail01.LL.com",
        "<118707422.15521266992174819.JavaMail.root@lvmail01>",
        [(a, "failed", "5.1.1", GMAIL_550) for a in BOUNCE1_TO],
    ),
    "mikel-mail/multipart_report_emails/multi_address_bounce2.eml": (
        "lvmail01.LL.com",
        "<118707422.15521266992174819.JavaMail.root@lvmail01>",
        [(a, "failed", "5.1.1", GMAIL_550) for a in BOUNCE1_TO],
    ),
    "mikel-mail/multipart_report_emails/multipart_report_multiple_status.eml": (
        "schemailmta04.ci.com",
        "<4c2a146147ac8_61ff157c4ec1652df@s.h.c.mail>",
        [("u@ci.com", "failed", "5.3.0", "")],
    ),
    "mikel-mail/multipart_report_emails/report_422.eml": (
        "mail11.ttttt.com.au",
        "<15655788.13.1200472642578.JavaMail.Administrator@mail.ttttt.com.au>",
        [("fraser@oooooooo.com.au", "delayed", "4.2.2", "mail.oooooooo.com.au")],
    ),
    "mikel-mail/multipart_report_emails/report_530.eml": (
        "mail12.rrrr.com.au",
        "<200712232303.lBNN3jDq002941@mail12.rrrr.com.au>",
        [("edwin@zzzzzzz.com", "failed", "5.3.0", "mail.zzzzzz.com")],
    ),
    "mikel-mail/mime_emails/raw_email_with_mimepart_without_content_type.eml": (
        "antivirus.uqam.ca",
        "<89d7557c0610181510r6fa5ebd8n66a7deec71ade118@mail.gmail.com>",
        [("larose.julie@courrier.uqam.ca", "delayed", "4.5.0", "")],
    ),
    # The per-recipient fields are base64 text inside the status part.
    "mimekit/bounce.txt": (
        "hmail.jitbit.com",
        "<44565655.JitbitHelpdesk.13439.691a0afc-a0a0-457c-8208-f20b7c4a4cb1@jitbit.com>",
        [("netec.test@netecgc.com", "failed", "5.1.1", None)],
    ),
    # No Action and no Final-Recipient: inferred from the Status and Original-Recipient.
    "mimekit/delivery-status-multiple-blank-lines.txt": (
        "someserver.com",
        "",
        [("orig_recip@customer.com", "failed", "5.5.0", "")],
    ),
    # No Status: inferred from "500" in the Diagnostic-Code.
    "mimekit/delivery-status.txt": (
        "mm1",
        "<31FC7EB4.41C6@netscape.com>",
        [("newsletter-request@imusic.com", "failed", "5.0.0", "")],
    ),
    "mimekit/delivery-status-no-blank-line.txt": (
        "mm1",
        "<31FC7EB4.41C6@netscape.com>",
        [("newsletter-request@imusic.com", "failed", "5.0.0", "")],
    ),
    "mimekit/delivery-status2.txt": (
        "smtp-out.dis-hosting.net",
        "",
        [("source@domain.com", "failed", "5.0.0", "")],
    ),
}


def corpus(name: str) -> bytes:
    return (CORPUS_DIR / name).read_bytes()


@pytest.mark.parametrize("name", sorted(CORPUS_DSNS))
def test_corpus_dsn_names_its_recipients_and_status(name):
    raw = corpus(name)
    assert report_candidate(parse_message(raw))
    reporting_mta, original_id, expected = CORPUS_DSNS[name]
    report = report_parse(raw)
    assert report is not None and report.kind == "dsn"
    assert report.reporting_mta == reporting_mta
    assert report.original_message_id == original_id
    got = [(r.address, r.action, r.status, r.remote_mta) for r in report.recipients]
    assert [g[:3] for g in got] == [e[:3] for e in expected]
    for (_, _, _, remote), (_, _, _, want) in zip(got, expected, strict=True):
        if want is not None:
            assert remote == want


def test_every_corpus_dsn_is_covered_and_mdns_are_not_reports():
    reports = {}
    for path in corpus_files():
        raw = path.read_bytes()
        if report_candidate(parse_message(raw)):
            reports[str(path.relative_to(CORPUS_DIR))] = report_parse(raw)
    dsns = {name for name, r in reports.items() if r is not None and r.kind == "dsn"}
    assert dsns == set(CORPUS_DSNS) | {"mimekit/delivery-status.anonymized.eml"}
    assert reports["mimekit/disposition-notification.txt"] is None


def test_corpus_dsn_details():
    report = report_parse(corpus("mikel-mail/multipart_report_emails/report_422.eml"))
    (recipient,) = report.recipients
    assert recipient.diagnostic_code == "SMTP; 452 4.2.2 <fraser@oooooooo.com.au>... Mailbox full"
    assert recipient.last_attempt == datetime(
        2008, 1, 17, 3, 40, 52, tzinfo=timezone(timedelta(hours=11))
    )
    assert report.arrival_date == datetime(
        2008, 1, 16, 19, 38, 7, tzinfo=timezone(timedelta(hours=11))
    )
    assert report.defects == []
    damaged = report_parse(corpus("mimekit/delivery-status.txt"))
    assert any("no readable Status" in d for d in damaged.defects)
    two_parts = report_parse(
        corpus("mikel-mail/multipart_report_emails/multipart_report_multiple_status.eml")
    )
    assert any("not fields" in d for d in two_parts.defects)


def test_anonymized_dsn_is_read_without_error_and_its_damage_noted():
    report = report_parse(corpus("mimekit/delivery-status.anonymized.eml"))
    assert report.kind == "dsn"
    assert [r.action for r in report.recipients] == [""]
    assert any("report-type" in d for d in report.defects)
    assert any("Arrival-Date unreadable" in d for d in report.defects)


# Damaged variants ----------------------------------------------------------------------------
def dsn(status_part: str, *, status_type: str = "message/delivery-status", tail: str = "") -> bytes:
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\n"
        "To: alice@example.com\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <dsn-1@mx.example.net>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
        "\r\n"
        "--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        f"--B\r\nContent-Type: {status_type}\r\n\r\n{status_part}\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        "From: alice@example.com\r\nMessage-ID: <sent-1@example.com>\r\nSubject: hi\r\n\r\n"
        f"--B--\r\n{tail}"
    ).encode()


GOOD_STATUS = (
    "Reporting-MTA: dns; mx.example.net\r\n"
    "Original-Envelope-Id: env-123\r\n"
    "Arrival-Date: Mon, 5 Jan 2026 09:00:00 +0000\r\n"
    "\r\n"
    "Final-Recipient: rfc822; bob@example.org\r\n"
    "Original-Recipient: rfc822;bob@example.org\r\n"
    "Action: failed\r\n"
    "Status: 5.1.1\r\n"
    "Remote-MTA: dns; mx.example.org\r\n"
    "Diagnostic-Code: smtp; 550 5.1.1 <bob@example.org>:\r\n"
    "    Recipient address rejected: User unknown\r\n"
    "Last-Attempt-Date: Mon, 5 Jan 2026 09:00:05 +0000\r\n"
)


def test_well_formed_dsn_with_folded_diagnostic():
    report = report_parse(dsn(GOOD_STATUS))
    assert report.envelope_id == "env-123"
    assert report.original_message_id == "<sent-1@example.com>"
    (r,) = report.recipients
    assert (r.address, r.action, r.status, r.remote_mta) == (
        "bob@example.org",
        "failed",
        "5.1.1",
        "mx.example.org",
    )
    assert r.diagnostic_code == (
        "smtp; 550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown"
    )
    assert r.last_attempt == datetime(2026, 1, 5, 9, 0, 5, tzinfo=UTC)
    assert report.defects == []


def test_odd_casing_and_no_blank_line_between_recipients():
    status = (
        "REPORTING-MTA: dns; mx.example.net\r\n"
        "final-recipient: RFC822; <a@example.org>\r\nACTION: Failed\r\nstatus: 5.2.2\r\n"
        "Final-Recipient: rfc822; b@example.org\r\nAction: delayed\r\nStatus: 4.4.1\r\n"
    )
    report = report_parse(dsn(status))
    assert [(r.address, r.action, r.status) for r in report.recipients] == [
        ("a@example.org", "failed", "5.2.2"),
        ("b@example.org", "delayed", "4.4.1"),
    ]
    assert report.reporting_mta == "mx.example.net"


@pytest.mark.parametrize(
    ("status", "defect"),
    [
        (GOOD_STATUS.replace("Action: failed\r\n", ""), "no Action for bob@example.org"),
        (GOOD_STATUS.replace("Status: 5.1.1\r\n", ""), "no readable Status"),
        (GOOD_STATUS.replace("Monday", "").replace("Mon, 5 Jan 2026", "the 5th"), "unreadable"),
        (GOOD_STATUS.replace("Final-Recipient: rfc822; bob@example.org\r\n", ""), "no Final"),
    ],
)
def test_missing_fields_are_noted_and_the_rest_kept(status, defect):
    report = report_parse(dsn(status))
    (r,) = report.recipients
    assert r.address == "bob@example.org" and r.action == "failed"
    assert any(defect in d for d in report.defects), report.defects


def test_status_sent_as_a_text_plain_part():
    report = report_parse(dsn(GOOD_STATUS, status_type="text/plain"))
    assert [(r.address, r.status) for r in report.recipients] == [("bob@example.org", "5.1.1")]
    assert any("no message/delivery-status part" in d for d in report.defects)


def test_garbled_status_part_falls_back_to_the_bounce_detectors():
    garbled = "\x00\xff garbage <<<>>> ::: \r\n\r\n\tcontinued nothing\r\n=?utf-8?q?x?="
    report = report_parse(dsn(garbled))
    assert report.kind == "dsn"
    assert any("not fields" in d for d in report.defects)
    assert any("no recipient" in d for d in report.defects)


@pytest.mark.parametrize("cut", [10, 200, 400, 600, 800, 1000])
def test_truncated_dsn_never_raises(cut):
    raw = dsn(GOOD_STATUS)[:cut]
    report = report_parse(raw)
    if report is not None:
        assert report.kind == "dsn"


def test_random_damage_never_raises():
    raw = bytearray(dsn(GOOD_STATUS))
    for step in range(0, len(raw), 7):
        damaged = bytes(raw[:step]) + b"\r\n\x00--B\r\n" + bytes(raw[step + 3 :])
        report_parse(damaged)
    assert report_parse(b"") is None
    assert report_parse(b"\xff" * 100) is None


# Non-standard bounces ------------------------------------------------------------------------
def qmail_bounce(original_id: str = "<sent-9@example.com>") -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example.net\r\n"
        "To: alice@example.com\r\n"
        "Subject: failure notice\r\n"
        "Message-ID: <qmail-1@mx.example.net>\r\n"
        "\r\n"
        "Hi. This is the qmail-send program at mx.example.net.\r\n"
        "I'm afraid I wasn't able to deliver your message to the following addresses.\r\n"
        "This is a permanent error; I've given up. Sorry it didn't work out.\r\n"
        "\r\n"
        "<nobody@example.org>:\r\n"
        "Sorry, no mailbox here by that name. (#5.1.1)\r\n"
        "\r\n"
        "--- Below this line is a copy of the message.\r\n"
        "\r\n"
        "Return-Path: <alice@example.com>\r\n"
        f"Message-ID: {original_id}\r\n"
        "From: alice@example.com\r\n"
        "Subject: hello\r\n"
        "\r\n"
        "Hello\r\n"
    ).encode()


def test_qmail_bounce_is_read_by_the_bounce_detectors():
    raw = qmail_bounce()
    assert report_candidate(parse_message(raw))
    report = report_parse(raw)
    assert report.kind == "bounce"
    assert [(r.address, r.action) for r in report.recipients] == [("nobody@example.org", "failed")]
    assert report.original_message_id == "<sent-9@example.com>"


def test_big_bounce_is_read_from_its_start():
    copy = b"".join(b"line %d of the returned message\r\n" % i for i in range(20000))
    report = report_parse(qmail_bounce() + copy)
    assert [r.address for r in report.recipients] == ["nobody@example.org"]
    assert report.defects == ["read from its first 65536 bytes only"]


def test_ordinary_mail_is_not_a_candidate():
    assert not report_candidate(parse_message(make_mail("Lunch tomorrow?")))
    assert report_candidate(parse_message(make_mail("Undeliverable: Lunch")))
    assert report_candidate(parse_message(make_mail(sender="postmaster@example.org")))
    # a candidate by its subject that is no bounce: read, and not a report
    assert report_parse(make_mail("Returned mail: not really")) is None


def test_most_of_the_corpus_skips_the_report_parser():
    files = corpus_files()
    candidates = [f for f in files if report_candidate(parse_message(f.read_bytes()))]
    assert len(candidates) < 20 < len(files)
    assert all(
        re.search(rb"(?i)multipart/report|daemon|postmaster", f.read_bytes()) for f in candidates
    )
