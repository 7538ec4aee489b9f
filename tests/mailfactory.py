"""Small builders of realistic RFC 5322 messages for tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime

_BASE_DATE = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def make_mail(
    subject: str = "Hello",
    *,
    message_id: str | None = None,
    in_reply_to: str | None = None,
    references: list[str] | None = None,
    sender: str = "Bob Sender <bob@example.org>",
    to: str = "Alice <alice@example.com>",
    body: str = "Hello Alice,\nhow are you?\n",
    html: str | None = None,
    minutes: int = 0,
    attachments: list[tuple[str, str, bytes]] | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(_BASE_DATE + timedelta(minutes=minutes))
    if message_id:
        msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = " ".join(references)
    msg.set_content(body)
    if html:
        msg.add_alternative(html, subtype="html")
    for filename, content_type, payload in attachments or []:
        maintype, subtype = content_type.split("/")
        msg.add_attachment(payload, maintype=maintype, subtype=subtype, filename=filename)
    return bytes(msg)
