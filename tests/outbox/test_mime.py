"""The MIME an outbound message goes out as: encoded headers that round-trip, CRLF only, no Bcc,
the Message-ID fixed at creation, and replies and forwards that keep their thread."""

from __future__ import annotations

import email
import email.policy
import re

import pytest

from messages.ingest import messages_upsert
from messages.models import Message, OutboundMessage
from messages.outbox import outbound_create
from tests.conftest import incoming

pytestmark = pytest.mark.django_db

SUBJECT = "Grüße aus Köln – 日本語のテキスト, a subject long enough to be folded over several lines"


def send(user, sender, **data) -> OutboundMessage:
    data.setdefault("to", [{"name": "Bob Builder", "address": "bob@example.org"}])
    outbound = outbound_create(user=user, data={"account": sender.pk, "send": True, **data})
    return OutboundMessage.objects.get(pk=outbound.pk)


def parsed(outbound: OutboundMessage) -> email.message.EmailMessage:
    return email.message_from_bytes(bytes(outbound.raw), policy=email.policy.default)


def test_headers_are_encoded_and_round_trip(user, sender, empty_queues):
    outbound = send(
        user,
        sender,
        subject=SUBJECT,
        to=[{"name": "Zoë Åström", "address": "zoe@example.org"}],
        cc=[{"name": "", "address": "carol@bücher.example"}],
        text="Hallo Zoë,\nbis gleich.\n",
    )
    raw = bytes(outbound.raw)
    assert raw.isascii(), "7-bit on the wire: encoded words and quoted-printable"
    assert b"=?utf-8?" in raw
    mail = parsed(outbound)
    assert mail["Subject"] == SUBJECT
    assert mail["To"].addresses[0].display_name == "Zoë Åström"
    assert mail["Cc"].addresses[0].addr_spec == "carol@xn--bcher-kva.example"
    assert mail["From"].addresses[0].display_name == "Alice Ünïcode"
    assert mail["From"].addresses[0].addr_spec == "alice@example.com"
    body = mail.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert body == "Hallo Zoë,\nbis gleich.\n"
    assert mail["Date"] is not None
    header_block = raw.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in header_block.split(b"\r\n")) <= 78
    assert b"\r\n Subject" not in header_block  # folded lines continue, never start a header


def test_every_line_ends_in_crlf(user, sender, empty_queues):
    outbound = send(
        user,
        sender,
        subject="Lines",
        text="one\ntwo\rthree\r\nfour " + "x" * 2000 + "\n",
        html="<p>one</p>\n<p>two</p>",
    )
    raw = bytes(outbound.raw)
    assert raw.count(b"\n") == raw.count(b"\r\n")
    assert raw.count(b"\r") == raw.count(b"\r\n")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    mail = parsed(outbound)
    assert mail.get_content_type() == "multipart/alternative"
    assert "<p>two</p>" in mail.get_body(("html",)).get_content()


def test_bcc_is_never_in_the_headers(user, sender, empty_queues):
    outbound = send(
        user,
        sender,
        subject="Secret copy",
        to=[{"name": "", "address": "bob@example.org"}],
        bcc=[{"name": "Hidden Harry", "address": "harry@example.net"}],
    )
    raw = bytes(outbound.raw)
    assert b"harry@example.net" not in raw
    assert b"Hidden Harry" not in raw
    assert b"bcc:" not in raw.lower()
    recipients = {(r.kind, r.address) for r in outbound.recipients.all()}
    assert recipients == {("to", "bob@example.org"), ("bcc", "harry@example.net")}


def test_only_bcc_gets_undisclosed_recipients(user, sender, empty_queues):
    outbound = send(user, sender, to=[], bcc=[{"name": "", "address": "harry@example.net"}])
    assert parsed(outbound)["To"] == "undisclosed-recipients:;"
    assert b"harry@example.net" not in bytes(outbound.raw)


def test_message_id_is_fixed_at_creation(user, sender, empty_queues):
    draft = outbound_create(
        user=user,
        data={"account": sender.pk, "to": [{"name": "", "address": "bob@example.org"}]},
    )
    assert re.fullmatch(r"<[0-9a-f]{32}@example\.com>", draft.message_id_header)
    assert re.fullmatch(r"[0-9a-f]{32}", draft.envelope_id)
    from messages.outbox import outbound_send

    queued = outbound_send(outbound=draft)
    assert queued.message_id_header == draft.message_id_header
    assert parsed(OutboundMessage.objects.get(pk=draft.pk))["Message-ID"] == (
        draft.message_id_header
    )


def test_a_reply_answers_its_parent_and_stays_in_its_thread(user, sender, parent, empty_queues):
    outbound = send(user, sender, reply_to_message=parent.pk, text="Noon is fine.")
    mail = parsed(outbound)
    assert mail["Subject"] == "Re: Lunch on Friday"
    assert mail["In-Reply-To"] == "<second@x>"
    assert mail["References"] == "<first@x> <second@x>"
    assert "menu.pdf" not in bytes(outbound.raw).decode()  # a reply carries no attachments

    # The copy the sender stores in Sent lands in the parent's thread.
    stored = messages_upsert(account=sender, items=[incoming(bytes(outbound.raw), folder="Sent")])
    copy = Message.objects.get(pk=stored.message_ids[0])
    assert copy.thread_id == parent.thread_id
    assert copy.message_id_header == outbound.message_id_header


def test_a_reply_keeps_an_existing_re(user, sender, parent, empty_queues):
    outbound = send(user, sender, reply_to_message=parent.pk, subject="RE: Lunch on Friday")
    assert parsed(outbound)["Subject"] == "RE: Lunch on Friday"


def test_a_forward_carries_the_original_and_its_attachments(user, sender, parent, empty_queues):
    outbound = send(user, sender, forward_of=parent.pk, text="See below.")
    mail = parsed(outbound)
    assert mail["Subject"] == "Fwd: Lunch on Friday"
    assert mail["In-Reply-To"] == "<second@x>"
    text = mail.get_body(("plain",)).get_content()
    assert text.startswith("See below.")
    assert "Forwarded message" in text and "Noon?" in text
    files = {part.get_filename(): part.get_content() for part in mail.iter_attachments()}
    assert files == {"menu.pdf": b"%PDF-1.4 menu"}


def test_a_forward_without_attachments(user, sender, parent, empty_queues):
    outbound = send(user, sender, forward_of=parent.pk, forward_attachments=False)
    assert list(parsed(outbound).iter_attachments()) == []


def test_stored_attachments_are_sent_with_their_names(user, sender, parent, empty_queues):
    attachment = parent.attachments.get()
    outbound = send(user, sender, attachments=[attachment.pk], subject="The menu")
    [part] = list(parsed(outbound).iter_attachments())
    assert part.get_filename() == "menu.pdf"
    assert part.get_content_type() == "application/pdf"
    assert part.get_content() == b"%PDF-1.4 menu"
    assert outbound.size == len(bytes(outbound.raw))
