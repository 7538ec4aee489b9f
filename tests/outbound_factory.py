"""Outbound messages for the delivery tests: created with the ORM and queued through
`outbox_states.outbound_queue` (the outbox's compose service lives on another branch), with
MIME bytes built by `email.message.EmailMessage`."""

from __future__ import annotations

import uuid
from email.message import EmailMessage
from email.utils import formatdate

from messages.models import Account, Message, OutboundMessage, OutboundRecipient
from messages.outbox_states import outbound_queue


def outbound_create(
    account: Account,
    *,
    to: list[str],
    cc: list[str] = (),  # type: ignore[assignment]
    bcc: list[str] = (),  # type: ignore[assignment]
    subject: str = "Hello",
    body: str = "Hi there.\n",
    reply_to: Message | None = None,
    notify_success: bool = False,
) -> OutboundMessage:
    domain = account.email_address.rsplit("@", 1)[-1]
    message_id = f"<{uuid.uuid4().hex}@{domain}>"
    mail = EmailMessage()
    mail["From"] = account.email_address
    mail["To"] = ", ".join(to)
    if cc:
        mail["Cc"] = ", ".join(cc)
    mail["Subject"] = subject
    mail["Date"] = formatdate(localtime=False)
    mail["Message-ID"] = message_id
    in_reply_to, references = "", []
    if reply_to is not None:
        in_reply_to = reply_to.message_id_header
        references = [*(reply_to.references or []), in_reply_to]
        mail["In-Reply-To"] = in_reply_to
        mail["References"] = " ".join(references)
    mail.set_content(body)
    raw = mail.as_bytes(policy=mail.policy.clone(linesep="\r\n"))
    outbound = OutboundMessage.objects.create(
        account=account,
        message_id_header=message_id,
        envelope_id=uuid.uuid4().hex,
        from_address=account.email_address,
        to=[{"name": "", "address": a} for a in to],
        cc=[{"name": "", "address": a} for a in cc],
        bcc=[{"name": "", "address": a} for a in bcc],
        subject=subject,
        body_text=body,
        reply_to_message=reply_to,
        in_reply_to=in_reply_to,
        references=references,
        notify_success=notify_success,
    )
    OutboundRecipient.objects.bulk_create(
        OutboundRecipient(outbound=outbound, kind=kind, address=address)
        for kind, addresses in (("to", to), ("cc", cc), ("bcc", bcc))
        for address in addresses
    )
    queued = outbound_queue(outbound.pk, raw)
    assert queued is not None
    return queued


def recipients_of(outbound: OutboundMessage) -> dict[str, tuple[str, int | None, str]]:
    """{address: (status, smtp_code, smtp_reply)}."""
    return {
        r.address: (r.status, r.smtp_code, r.smtp_reply)
        for r in OutboundRecipient.objects.filter(outbound=outbound)
    }
