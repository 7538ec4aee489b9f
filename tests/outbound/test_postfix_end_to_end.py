"""Outbound mail end to end with real components only: composed through the API, sent by the
`smtp_sync.send_outbound` task taken from the real Redis queue, relayed by the private Postfix
into Dovecot; Postfix's own DSNs come back to the sender's INBOX and reach the outbound message
through the platform's IMAP sync."""

from __future__ import annotations

import email
import email.policy
import re
import uuid
from typing import Any

import pytest
from rest_framework.test import APIClient

from emailplatform import topics
from emailplatform.celery import app
from messages.models import Account, DeliveryReport, Message, OutboundMessage
from smtp_sync import tasks  # noqa: F401  (registers smtp_sync.send_outbound)
from smtp_sync.accounts import ImapAccountInput, imap_account_create
from smtp_sync.services import imap_sync_account
from tests.conftest import CORPUS_DIR, token_client
from tests.imap_fixtures import MailServerUser, new_mail_server_user
from tests.mailfactory import make_mail
from tests.messages.api.conftest import empty_queues, queued  # noqa: F401 (fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("empty_queues")]

SEND = topics.OUTBOUND_SEND_TASKS["imap"]
REPORT_530 = "mikel-mail/multipart_report_emails/report_530.eml"
REPORT_530_RETURNED_ID = "<200712232303.lBNN3jDq002941@mail12.rrrr.com.au>"


@pytest.fixture
def sender_box(dovecot) -> MailServerUser:
    return new_mail_server_user(dovecot)


@pytest.fixture
def friend_box(dovecot) -> MailServerUser:
    return new_mail_server_user(dovecot)


def account_through(owner, box: MailServerUser, address: str, host: str, port: int) -> Account:
    """BOX's IMAP account, as its owner would add it: sending through HOST:PORT, plain, with
    the IMAP login (a server that offers no AUTH is sent to without it)."""
    return imap_account_create(
        owner=owner,
        data=ImapAccountInput(
            email_address=address,
            imap_host=box.host,
            imap_port=box.port,
            imap_security="none",
            username=box.username,
            password=box.password,
            smtp_host=host,
            smtp_port=port,
            smtp_security="none",
        ),
        start_sync=False,
    )


@pytest.fixture
def account(user, sender_box, postfix) -> Account:
    return account_through(
        user, sender_box, postfix.address(sender_box), postfix.host, postfix.port
    )


@pytest.fixture
def api(user) -> APIClient:
    return token_client(user)


def send(api: APIClient, account: Account, to: list[str], **data: Any) -> dict:
    """Compose and send through the API, then run the send task the API put on the provider's
    Redis queue, as the provider's worker would; the outbound message as the API shows it."""
    body = {
        "account": account.pk,
        "to": [{"address": a} for a in to],
        "subject": f"e2e {uuid.uuid4().hex[:8]}",
        "text": "Hello from the platform.\n",
        "send": True,
        **data,
    }
    response = api.post("/api/outbound/", body, format="json")
    assert response.status_code == 201, response.content
    created = response.json()
    tasks_waiting = queued(topics.PROVIDER_QUEUES["imap"])
    assert tasks_waiting == [(SEND, [created["id"]])]
    outcome = app.tasks[SEND].apply(args=[created["id"]]).get()
    detail = api.get(f"/api/outbound/{created['id']}/").json()
    assert detail["state"] == "sent", (outcome, detail["last_error"])
    return detail


def recipients(api: APIClient, outbound_id: int) -> dict[str, dict]:
    detail = api.get(f"/api/outbound/{outbound_id}/").json()
    return {r["address"]: r for r in detail["recipients"]}


def changes_since(api: APIClient, cursor: str) -> list[tuple[str, str, int]]:
    changes = api.get(f"/api/changes/?cursor={cursor}&limit=1000").json()["changes"]
    return [(c["type"], c["kind"], c["object_id"]) for c in changes]


def feed_cursor(api: APIClient) -> str:
    return api.get("/api/changes/?limit=1000").json()["cursor"]


def copies(box: MailServerUser, folder: str, message_id: str) -> list[set[str]]:
    """The flags of each copy of MESSAGE_ID in BOX's FOLDER."""
    with box.client() as client:
        client.select_folder(folder, readonly=True)
        uids = client.search(["HEADER", "Message-ID", message_id])
        return [{f.decode() for f in d[b"FLAGS"]} for d in client.fetch(uids, ["FLAGS"]).values()]


def recipient_fields(raw: bytes, address: str) -> dict[str, str]:
    """The per-recipient fields Postfix wrote for ADDRESS in its DSN (unfolded)."""
    report = email.message_from_bytes(raw)
    [status] = [p for p in report.walk() if p.get_content_type() == "message/delivery-status"]
    for block in status.get_payload():
        if address in (block["Final-Recipient"] or ""):
            return {k.lower(): re.sub(r"\s+", " ", str(v)).strip() for k, v in block.items()}
    raise AssertionError(f"the DSN names no {address}")


def typed_value(value: str) -> str:
    return value.partition(";")[2].strip()


def test_an_unknown_recipient_bounces_with_postfix_s_report(
    api, account, sender_box, friend_box, postfix
):
    nobody = f"nobody-{uuid.uuid4().hex[:8]}@{postfix.domain}"
    friend = postfix.address(friend_box)

    sent = send(api, account, [nobody, friend])

    outbound = OutboundMessage.objects.get(pk=sent["id"])
    assert {a: r["status"] for a, r in recipients(api, sent["id"]).items()} == {
        nobody: "accepted",
        friend: "accepted",
    }, "Postfix takes both at RCPT; it finds out about nobody at delivery"
    dsn = postfix.wait_for_message(sender_box, body=outbound.envelope_id)
    postfix.wait_for_message(friend_box, header=("Message-ID", outbound.message_id_header))
    cursor = feed_cursor(api)

    imap_sync_account(account.pk)

    status = recipients(api, sent["id"])
    written = recipient_fields(dsn, nobody)
    assert status[nobody]["status"] == "bounced"
    assert status[nobody]["status_code"] == written["status"] == "5.1.1"
    assert status[nobody]["diagnostic_code"] == written["diagnostic-code"]
    assert "5.1.1" in status[nobody]["diagnostic_code"]
    assert status[nobody]["remote_mta"] == typed_value(written["remote-mta"])
    assert status[friend]["status"] == "accepted" and status[friend]["status_code"] == ""
    report = DeliveryReport.objects.get(outbound=outbound)
    stored = Message.objects.get(
        account=account, message_id_header=report.message.message_id_header
    )
    assert stored.message_id_header == email.message_from_bytes(dsn)["Message-Id"]
    assert (report.kind, report.matched_by) == ("dsn", "envelope_id")
    shown = api.get(f"/api/messages/{stored.pk}/").json()["delivery_report"]
    assert (shown["kind"], shown["matched_by"]) == ("dsn", "envelope_id")
    assert status[nobody]["report_message"] == stored.pk
    assert [r["message"] for r in api.get(f"/api/outbound/{sent['id']}/").json()["reports"]] == [
        stored.pk
    ]
    assert ("outbound", "updated", sent["id"]) in changes_since(api, cursor)
    assert len(copies(friend_box, "INBOX", outbound.message_id_header)) == 1
    mine = Message.objects.filter(account=account, message_id_header=outbound.message_id_header)
    assert list(mine.values_list("pk", flat=True)) == [outbound.sent_message_id]


def test_a_bounce_for_an_address_with_plus_and_capitals_finds_its_recipient(
    api, account, sender_box, postfix
):
    """ORCPT carries the address as sent (xtext-encoded: "+" as "+2B"); Postfix's report
    gives it back decoded, capitals kept, and names the final recipient as it routed it."""
    nobody = f"No.Body+Tag-{uuid.uuid4().hex[:8]}@{postfix.domain}"

    sent = send(api, account, [nobody])

    outbound = OutboundMessage.objects.get(pk=sent["id"])
    dsn = postfix.wait_for_message(sender_box, body=outbound.envelope_id)
    imap_sync_account(account.pk)

    [(address, status)] = recipients(api, sent["id"]).items()
    assert address.lower() == nobody.lower()
    assert (status["status"], status["status_code"]) == ("bounced", "5.1.1"), dsn.decode()


def test_notify_success_brings_a_delivered_status(api, account, sender_box, friend_box, postfix):
    friend = postfix.address(friend_box)

    sent = send(api, account, [friend], notify_success=True)

    outbound = OutboundMessage.objects.get(pk=sent["id"])
    dsn = postfix.wait_for_message(sender_box, body=outbound.envelope_id)
    imap_sync_account(account.pk)

    reached = recipients(api, sent["id"])[friend]
    written = recipient_fields(dsn, friend)
    assert reached["status"] == written["action"] and reached["status"] in ("delivered", "relayed")
    assert reached["status_code"] == written["status"] and reached["status_code"].startswith("2.")
    assert reached["report_message"] is not None
    assert len(copies(friend_box, "INBOX", outbound.message_id_header)) == 1


def test_a_corpus_bounce_is_matched_to_a_message_sent_in_the_test(
    api, user, sender_box, smtp_server
):
    """mikel-mail's report_530 (a sendmail DSN without ENVID) names edwin@zzzzzzz.com: a
    message is sent to him (aiosmtpd: the private Postfix sends nowhere but its own domain) and
    the report, its returned Message-ID made that message's, lands in the sender's INBOX."""
    server = smtp_server(users={sender_box.username: sender_box.password})
    account = account_through(
        user, sender_box, f"{sender_box.username}@example.com", server.host, server.port
    )
    sent = send(api, account, ["edwin@zzzzzzz.com"])
    assert [m.rcpt_tos for m in server.messages] == [["edwin@zzzzzzz.com"]]
    message_id = sent["message_id"]
    corpus = (CORPUS_DIR / REPORT_530).read_bytes()
    assert REPORT_530_RETURNED_ID.encode() in corpus
    sender_box.append("INBOX", corpus.replace(REPORT_530_RETURNED_ID.encode(), message_id.encode()))

    imap_sync_account(account.pk)

    edwin = recipients(api, sent["id"])["edwin@zzzzzzz.com"]
    assert (edwin["status"], edwin["status_code"], edwin["remote_mta"]) == (
        "bounced",
        "5.3.0",
        "mail.zzzzzz.com",
    )
    assert "Unknown E-Mail Address" in edwin["diagnostic_code"]
    report = DeliveryReport.objects.get(message_id=edwin["report_message"])
    assert (report.outbound_id, report.matched_by) == (sent["id"], "message_id")
    shown = api.get(f"/api/messages/{report.message_id}/").json()["delivery_report"]
    assert [(r["address"], r["status"]) for r in shown["recipients"]] == [
        ("edwin@zzzzzzz.com", "5.3.0")
    ]


def test_a_reply_lands_in_sent_once_and_in_its_thread(
    api, account, sender_box, friend_box, postfix
):
    friend = postfix.address(friend_box)
    question_id = f"<{uuid.uuid4().hex}@{postfix.domain}>"
    with postfix.smtp() as smtp:
        smtp.sendmail(
            friend,
            [account.email_address],
            make_mail("Lunch?", message_id=question_id, sender=friend, to=account.email_address),
        )
    postfix.wait_for_message(sender_box, header=("Message-ID", question_id))
    imap_sync_account(account.pk)
    question = Message.objects.get(account=account, message_id_header=question_id)

    sent = send(api, account, [friend], subject="Re: Lunch?", reply_to_message=question.pk)

    outbound = OutboundMessage.objects.get(pk=sent["id"])
    assert copies(sender_box, "Sent", outbound.message_id_header) == [{"\\Seen"}]
    received = email.message_from_bytes(
        postfix.wait_for_message(friend_box, header=("Message-ID", outbound.message_id_header)),
        policy=email.policy.default,
    )
    assert received["In-Reply-To"] == question_id
    imap_sync_account(account.pk)
    [copy] = Message.objects.filter(account=account, message_id_header=outbound.message_id_header)
    assert copy.pk == outbound.sent_message_id and copy.thread_id == question.thread_id
    assert list(copy.locations.values_list("folder__name", flat=True)) == ["Sent"]
    assert copies(sender_box, "Sent", outbound.message_id_header) == [{"\\Seen"}]
