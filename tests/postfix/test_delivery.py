"""The private Postfix delivers into Dovecot and answers with real RFC 3464 DSNs: the route a
message the platform sends takes, and the reports it will have to read."""

from __future__ import annotations

import email
import hashlib
import smtplib
import uuid
from email.message import Message as EmailMessage

import pytest

from messages.models import Message
from smtp_sync.services import imap_sync_account
from tests.imap_fixtures import account_for, new_mail_server_user
from tests.mailfactory import make_mail


@pytest.fixture
def sender(dovecot):
    return new_mail_server_user(dovecot)


@pytest.fixture
def recipient(dovecot):
    return new_mail_server_user(dovecot)


def send(postfix, sender, to: str, subject: str, *, mail_options=(), rcpt_options=()) -> None:
    raw = make_mail(
        subject,
        message_id=f"<{uuid.uuid4().hex}@{postfix.domain}>",
        sender=postfix.address(sender),
        to=to,
    )
    with postfix.smtp() as smtp:
        refused = smtp.sendmail(
            postfix.address(sender),
            [to],
            raw,
            mail_options=list(mail_options),
            rcpt_options=list(rcpt_options),
        )
    assert refused == {}


def report_parts(raw: bytes) -> tuple[EmailMessage, list[EmailMessage], EmailMessage]:
    """(the report's per-message fields, its per-recipient fields, the returned part)."""
    dsn = email.message_from_bytes(raw)
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    parts = {part.get_content_type(): part for part in dsn.get_payload()}
    per_message, *per_recipient = parts["message/delivery-status"].get_payload()
    returned = parts.get("text/rfc822-headers") or parts.get("message/rfc822")
    return per_message, per_recipient, returned


def test_a_message_to_a_known_user_lands_in_their_inbox(postfix, sender, recipient):
    subject = f"hello {uuid.uuid4().hex}"
    send(postfix, sender, postfix.address(recipient), subject)

    raw = postfix.wait_for_message(recipient, header=("Subject", subject))
    delivered = email.message_from_bytes(raw)
    assert delivered["Delivered-To"] == postfix.address(recipient)
    assert delivered["Return-Path"] == f"<{postfix.address(sender)}>"


def test_an_unknown_local_recipient_bounces_with_a_dsn_to_the_sender(postfix, sender):
    envid = f"env-{uuid.uuid4().hex}"
    nobody = f"nobody-{uuid.uuid4().hex[:8]}@{postfix.domain}"
    subject = f"to nobody {envid}"
    send(
        postfix,
        sender,
        nobody,
        subject,
        mail_options=["RET=HDRS", f"ENVID={envid}"],
        rcpt_options=["NOTIFY=FAILURE,DELAY", f"ORCPT=rfc822;{nobody}"],
    )

    raw = postfix.wait_for_message(sender, body=envid)
    per_message, per_recipient, returned = report_parts(raw)
    assert per_message["Original-Envelope-Id"] == envid
    [failed] = per_recipient
    assert failed["Final-Recipient"] == f"rfc822; {nobody}"
    assert failed["Original-Recipient"].replace(" ", "") == f"rfc822;{nobody}"
    assert (failed["Action"], failed["Status"]) == ("failed", "5.1.1")
    # RET=HDRS: the original's headers come back, not its body.
    assert returned.get_content_type() == "text/rfc822-headers"
    assert f"Subject: {subject}" in returned.get_payload()
    assert "how are you" not in returned.get_payload()


def test_mail_for_another_domain_is_refused_at_rcpt(postfix, sender):
    """Nothing leaves the machine: a synchronous permanent refusal, where an unknown local
    recipient gets an asynchronous bounce."""
    elsewhere = "someone@elsewhere.invalid"
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        send(postfix, sender, elsewhere, "far away")
    code, reply = refused.value.recipients[elsewhere]
    assert code == 550 and reply.startswith(b"5.1.2 ")


def test_notify_success_brings_a_delivery_report(postfix, sender, recipient):
    envid = f"env-{uuid.uuid4().hex}"
    subject = f"report me {envid}"
    send(
        postfix,
        sender,
        postfix.address(recipient),
        subject,
        mail_options=[f"ENVID={envid}"],
        rcpt_options=["NOTIFY=SUCCESS"],
    )

    postfix.wait_for_message(recipient, header=("Subject", subject))
    per_message, [done], _ = report_parts(postfix.wait_for_message(sender, body=envid))
    assert per_message["Original-Envelope-Id"] == envid
    assert done["Final-Recipient"] == f"rfc822; {postfix.address(recipient)}"
    assert done["Action"] in ("delivered", "relayed")
    assert done["Status"].startswith("2.")


@pytest.mark.django_db(transaction=True)
def test_the_imap_sync_stores_a_bounce_as_a_message(postfix, sender, user):
    envid = f"env-{uuid.uuid4().hex}"
    nobody = f"nobody-{uuid.uuid4().hex[:8]}@{postfix.domain}"
    send(postfix, sender, nobody, f"lost {envid}", mail_options=[f"ENVID={envid}"])
    raw = postfix.wait_for_message(sender, body=envid)

    account = account_for(user, sender)
    imap_sync_account(account.id)

    stored = Message.objects.get(account=account)
    assert stored.message_id_header == email.message_from_bytes(raw)["Message-Id"]
    assert stored.raw.sha256 == hashlib.sha256(raw).hexdigest()
    assert stored.from_address == f"MAILER-DAEMON@{postfix.domain}"


def test_waiting_in_vain_fails_with_the_end_of_postfix_log(postfix, sender, recipient):
    subject = f"arrives {uuid.uuid4().hex}"
    send(postfix, sender, postfix.address(recipient), subject)
    postfix.wait_for_message(recipient, header=("Subject", subject))

    with pytest.raises(pytest.fail.Exception) as failed:
        postfix.wait_for_message(recipient, header=("Subject", "never sent"), timeout=0.5)
    assert "never sent" in str(failed.value)
    assert f"to=<{postfix.address(recipient)}>" in str(failed.value)  # the delivery, logged
