"""`make run`'s demo: a private Dovecot mailbox with realistic mail, registered as an account."""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.utils import format_datetime, make_msgid, parsedate_to_datetime
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from imapclient import IMAPClient

from messages.models import Account
from smtp_sync.accounts import ImapAccountInput, ServerSettingRefused, imap_account_create

DEMO_USER = "demo"
CORPUS_SAMPLE = [
    "james-mime4j/simple-attachment.msg",
    "james-mime4j/multi-2gifs.msg",
    "james-mime4j/german-qp.msg",
    "mimekit/delivery-status.txt",
    "mikel-mail/rfc6532/utf8_headers.eml",
]


def _mail(subject, sender, body, *, when, msgid=None, reply_to=None, attachment=None) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "Demo User <demo@example.com>"
    msg["Subject"] = subject
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = msgid or make_msgid(domain="demo.example")
    if reply_to:
        msg["In-Reply-To"] = reply_to
        msg["References"] = reply_to
    msg.set_content(body)
    msg.add_alternative(f"<p>{body.replace(chr(10), '<br>')}</p>", subtype="html")
    if attachment:
        name, ctype, payload = attachment
        maintype, subtype = ctype.split("/")
        msg.add_attachment(payload, maintype=maintype, subtype=subtype, filename=name)
    return bytes(msg)


def demo_mailbox() -> dict[str, list[tuple[bytes, tuple[str, ...]]]]:
    now = datetime.now(UTC)
    plan_id = make_msgid(domain="demo.example")
    reply_id = make_msgid(domain="demo.example")
    inbox = [
        (
            _mail(
                "Welcome to the email platform",
                "Platform <hello@demo.example>",
                "This mailbox lives on a private Dovecot server.\nIt was synced over IMAP.",
                when=now - timedelta(minutes=5),
            ),
            (),
        ),
        (
            _mail(
                "Q3 planning",
                "Ana Lopez <ana@demo.example>",
                "Shall we meet on Thursday?",
                when=now - timedelta(hours=3),
                msgid=plan_id,
            ),
            ("\\Seen",),
        ),
        (
            _mail(
                "Re: Q3 planning",
                "Ben Okafor <ben@demo.example>",
                "Thursday works for me.",
                when=now - timedelta(hours=2),
                msgid=reply_id,
                reply_to=plan_id,
            ),
            (),
        ),
        (
            _mail(
                "Re: Q3 planning",
                "Ana Lopez <ana@demo.example>",
                "Booked room 4. Agenda attached.",
                when=now - timedelta(hours=1),
                reply_to=reply_id,
                attachment=("agenda.txt", "text/plain", b"1. Budget\n2. Hiring\n"),
            ),
            ("\\Flagged",),
        ),
    ]
    archive = [
        (
            _mail(
                f"Invoice #{1000 + i}",
                "Billing <billing@demo.example>",
                f"Invoice {1000 + i}.",
                when=now - timedelta(days=30 + i),
                attachment=(f"invoice-{1000 + i}.pdf", "application/pdf", b"%PDF-1.4 demo"),
            ),
            ("\\Seen",),
        )
        for i in range(3)
    ]
    corpus_dir = Path(settings.BASE_DIR) / "tests" / "data" / "corpus"
    samples = [
        (corpus_dir / name).read_bytes() for name in CORPUS_SAMPLE if (corpus_dir / name).exists()
    ]
    return {"INBOX": inbox, "Archive": archive, "Samples": [(raw, ("\\Seen",)) for raw in samples]}


def internal_date(raw: bytes) -> datetime | None:
    """The message's Date as its IMAP internal date, so the mailbox sorts as a real inbox
    would (an APPEND without one is dated by the server's clock: all the same minute)."""
    value = BytesHeaderParser().parsebytes(raw).get("Date")
    if not value:
        return None
    try:
        when = parsedate_to_datetime(str(value))
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


class Command(BaseCommand):
    help = "Seed the private Dovecot with a demo mailbox and add it as the admin's account."

    def add_arguments(self, parser):
        parser.add_argument("--owner", default="admin")

    def handle(self, *args, **options) -> None:
        users_dir = os.environ.get("DOVECOT_USERS_DIR")
        host, port = os.environ.get("IMAP_TEST_HOST"), os.environ.get("IMAP_TEST_PORT")
        if not (users_dir and host and port):
            raise CommandError("no private Dovecot running (DOVECOT_USERS_DIR is not set)")
        owner = get_user_model().objects.filter(username=options["owner"]).first()
        if owner is None:
            raise CommandError(f"no user {options['owner']!r}")
        passwd = Path(users_dir) / DEMO_USER
        if passwd.exists():
            password = passwd.read_text().split("{PLAIN}", 1)[1].strip()
        else:
            password = secrets.token_urlsafe(16)
            passwd.write_text(f"{DEMO_USER}:{{PLAIN}}{password}\n")
        with IMAPClient(host, port=int(port), ssl=False) as client:
            client.login(DEMO_USER, password)
            if client.select_folder("INBOX")[b"EXISTS"] == 0:
                for folder, messages in demo_mailbox().items():
                    if not client.folder_exists(folder):
                        client.create_folder(folder)
                    for raw, flags in messages:
                        client.append(
                            folder,
                            raw,
                            flags=[f.encode() for f in flags],
                            msg_time=internal_date(raw),
                        )
        address = "demo@example.com"
        if Account.objects.filter(owner=owner, email_address=address).exists():
            self.stdout.write(f"Demo account {address} already set up.")
            return
        try:
            # A loopback server with plain IMAP: the guard lets it through only because
            # scripts/devservices.py put exactly this host:port on OUTBOUND_ALLOWED_NETWORKS.
            imap_account_create(
                owner=owner,
                data=ImapAccountInput(
                    email_address=address,
                    display_name="Demo mailbox",
                    imap_host=host,
                    imap_port=int(port),
                    imap_security="none",
                    username=DEMO_USER,
                    password=password,
                ),
            )
        except ServerSettingRefused as exc:
            raise CommandError(
                f"the demo Dovecot {host}:{port} is refused ({exc}): add {host}:{port} to "
                "OUTBOUND_ALLOWED_NETWORKS (scripts/devservices.py does)"
            ) from exc
        self.stdout.write(f"Demo account {address} added; its first sync is queued.")
