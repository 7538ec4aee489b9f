"""Delivery reports arriving through the ingest: matched to what the owner sent, recorded once."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from django.core.management import call_command
from django.urls import reverse

from messages.ingest import messages_upsert
from messages.models import (
    Account,
    ChangeEvent,
    DeliveryReport,
    Message,
    OutboundMessage,
    OutboundRecipient,
)
from tests.conftest import CORPUS_DIR, incoming, token_client
from tests.mailfactory import make_mail
from tests.messages.test_delivery_reports import GOOD_STATUS, dsn, qmail_bounce

pytestmark = pytest.mark.django_db

Status = OutboundRecipient.Status


def outbound(account, *, envelope_id="env-123", message_id="<sent-1@example.com>", to=()):
    sent = OutboundMessage.objects.create(
        account=account,
        state=OutboundMessage.State.SENT,
        message_id_header=message_id,
        envelope_id=envelope_id,
        from_address=account.email_address,
        subject="hi",
    )
    for address in to or ["bob@example.org"]:
        OutboundRecipient.objects.create(
            outbound=sent, kind="to", address=address, status=Status.ACCEPTED, smtp_code=250
        )
    return sent


def ingest(account, raw: bytes, **meta) -> Message:
    result = messages_upsert(account=account, items=[incoming(raw, folder="INBOX", **meta)])
    assert not result.dead_letters and not result.problems
    return Message.objects.get(pk=result.message_ids[0])


def recipient(sent, address="bob@example.org") -> OutboundRecipient:
    return OutboundRecipient.objects.get(outbound=sent, address=address)


def outbound_events(account) -> int:
    return ChangeEvent.objects.filter(owner=account.owner, object_type="outbound").count()


def test_dsn_matched_by_envelope_id_marks_the_recipient_bounced(account):
    sent = outbound(account, message_id="<something-else@example.com>")
    before = outbound_events(account)
    message = ingest(account, dsn(GOOD_STATUS))
    report = DeliveryReport.objects.get(message=message)
    assert (report.kind, report.outbound, report.matched_by) == ("dsn", sent, "envelope_id")
    bob = recipient(sent)
    assert (bob.status, bob.action, bob.status_code, bob.remote_mta) == (
        "bounced",
        "failed",
        "5.1.1",
        "mx.example.org",
    )
    assert "User unknown" in bob.diagnostic_code
    assert bob.reported_at == datetime(2026, 1, 5, 9, 0, 5, tzinfo=UTC)
    assert bob.report_message == message
    assert (bob.smtp_code, bob.kind) == (250, "to")  # what the sending server said stays
    assert outbound_events(account) == before + 1
    assert report.recipients[0]["recipient"] == "bob@example.org"
    assert Message.objects.filter(account=account).count() == 1  # kept as mail too


def test_dsn_matched_by_the_returned_message_id(account):
    sent = outbound(account, envelope_id="ours-not-in-the-report")
    message = ingest(account, dsn(GOOD_STATUS.replace("Original-Envelope-Id: env-123\r\n", "")))
    report = message.delivery_report
    assert (report.outbound, report.matched_by) == (sent, "message_id")
    assert recipient(sent).status == "bounced"


def test_bounce_matched_by_in_reply_to(account):
    sent = outbound(
        account, envelope_id="e-2", message_id="<sent-7@example.com>", to=["nobody@example.org"]
    )
    bounce = qmail_bounce(original_id="<unrelated@example.com>").replace(
        b"Subject: failure notice\r\n",
        b"Subject: failure notice\r\nIn-Reply-To: <sent-7@example.com>\r\n",
    )
    message = ingest(account, bounce)
    report = message.delivery_report
    assert (report.kind, report.outbound, report.matched_by) == ("bounce", sent, "in_reply_to")
    assert recipient(sent, "nobody@example.org").status == "bounced"


def test_flufl_style_bounce_updates_the_recipient_it_names(account):
    sent = outbound(
        account,
        envelope_id="e-3",
        message_id="<sent-9@example.com>",
        to=["nobody@example.org", "carol@example.org"],
    )
    message = ingest(account, qmail_bounce())
    assert message.delivery_report.matched_by == "message_id"
    assert recipient(sent, "nobody@example.org").status == "bounced"
    assert recipient(sent, "carol@example.org").status == "accepted"


def test_a_report_never_touches_another_owners_outbound(account, django_user_model):
    bob_user = django_user_model.objects.create_user("bob", "bob@example.com", "pw-bob-123")
    bobs_account = Account.objects.create(
        owner=bob_user, provider=Account.Provider.LOCAL, email_address="bob@example.com"
    )
    bobs = outbound(bobs_account)  # the ENVID and Message-ID the report names
    message = ingest(account, dsn(GOOD_STATUS))
    report = message.delivery_report
    assert report.outbound is None and report.matched_by == ""
    assert recipient(bobs).status == "accepted"
    assert not ChangeEvent.objects.filter(owner=bob_user, object_type="outbound").exists()


def test_same_report_ingested_twice_records_once(account):
    sent = outbound(account)
    raw = dsn(GOOD_STATUS)
    ingest(account, raw, uid=1)
    events = outbound_events(account)
    reported_at = recipient(sent).reported_at
    messages_upsert(account=account, items=[incoming(raw, folder="INBOX", uid=1)])
    messages_upsert(account=account, items=[incoming(raw, folder="Archive", uid=5)])
    assert DeliveryReport.objects.count() == 1
    assert outbound_events(account) == events
    assert recipient(sent).reported_at == reported_at


def test_unmatched_bounce_is_stored_and_marked(account):
    message = ingest(account, qmail_bounce())
    report = DeliveryReport.objects.get()
    assert report.message == message and report.outbound is None and report.kind == "bounce"
    assert report.original_message_id == "<sent-9@example.com>"
    assert message.subject == "failure notice" and message.body_text


def test_ordinary_mail_records_no_report(account):
    ingest(account, make_mail("Lunch"))
    ingest(account, make_mail("Returned mail: the book you lent me"))
    assert not DeliveryReport.objects.exists()


def test_delayed_never_overwrites_bounced_but_bounced_follows_delayed(account):
    sent = outbound(account, to=["bob@example.org", "carol@example.org"])
    delayed = (
        "Reporting-MTA: dns; mx.example.net\r\nOriginal-Envelope-Id: env-123\r\n\r\n"
        "Final-Recipient: rfc822; {0}\r\nAction: delayed\r\nStatus: 4.4.1\r\n"
    )
    ingest(account, dsn(delayed.format("carol@example.org")).replace(b"dsn-1@", b"dsn-a@"))
    assert recipient(sent, "carol@example.org").status == "delayed"
    ingest(account, dsn(GOOD_STATUS))
    assert recipient(sent).status == "bounced"
    late = ingest(account, dsn(delayed.format("bob@example.org")).replace(b"dsn-1@", b"dsn-b@"))
    bob = recipient(sent)
    assert (bob.status, bob.status_code) == ("bounced", "5.1.1")
    assert late.delivery_report.recipients[0]["recipient"] is None
    failed = GOOD_STATUS.replace("bob@example.org", "carol@example.org")
    ingest(account, dsn(failed).replace(b"dsn-1@", b"dsn-c@"))
    assert recipient(sent, "carol@example.org").status == "bounced"


def test_corpus_bounce_matched_to_a_message_sent_in_the_test(account):
    sent = outbound(
        account,
        envelope_id="corpus-530",
        message_id="<200712232303.lBNN3jDq002941@mail12.rrrr.com.au>",
        to=["Edwin@zzzzzzz.com"],
    )
    raw = (CORPUS_DIR / "mikel-mail/multipart_report_emails/report_530.eml").read_bytes()
    ingest(account, raw)
    edwin = recipient(sent, "Edwin@zzzzzzz.com")
    assert (edwin.status, edwin.status_code, edwin.remote_mta) == (
        "bounced",
        "5.3.0",
        "mail.zzzzzz.com",
    )


def test_damaged_report_is_stored_with_its_defects(account):
    raw = dsn("\x00 not fields at all \r\n")
    message = ingest(account, raw)
    report = message.delivery_report
    assert report.kind == "dsn" and report.outbound is None
    assert any("not fields" in d for d in report.defects)
    assert bytes(message.raw.content()) == raw


def test_nul_and_8bit_bytes_in_a_report_are_stored_cleanly(account):
    sent = outbound(account)
    status = GOOD_STATUS.encode().replace(
        b"Recipient address rejected", b"Destinat\xe1rio rejeitado\x00"
    )
    raw = dsn("@@STATUS@@").replace(b"@@STATUS@@", status)
    message = ingest(account, raw)  # stored in full: not split off as damaged
    bob = recipient(sent)
    assert bob.status == "bounced" and "rejeitado" in bob.diagnostic_code
    assert "\x00" not in bob.diagnostic_code
    assert message.delivery_report.recipients[0]["diagnostic_code"] == bob.diagnostic_code


def test_import_mail_records_the_report(account, tmp_path):
    sent = outbound(account)
    (tmp_path / "dsn.eml").write_bytes(dsn(GOOD_STATUS))
    call_command(
        "import_mail", "--account", account.email_address, str(tmp_path), stdout=io.StringIO()
    )
    assert recipient(sent).status == "bounced"
    assert DeliveryReport.objects.get().outbound == sent


def test_message_api_shows_the_delivery_report(account, user):
    sent = outbound(account)
    message = ingest(account, dsn(GOOD_STATUS))
    plain = ingest(account, make_mail("Lunch"))
    api = token_client(user)
    body = api.get(reverse("api:message-detail", args=[message.pk])).json()
    report = body["delivery_report"]
    assert (report["kind"], report["outbound"], report["matched_by"]) == (
        "dsn",
        sent.pk,
        "envelope_id",
    )
    assert report["recipients"][0]["address"] == "bob@example.org"
    assert report["recipients"][0]["status"] == "5.1.1"
    assert api.get(reverse("api:message-detail", args=[plain.pk])).json()["delivery_report"] is None


def test_admin_shows_delivery_reports(account, client, django_user_model):
    outbound(account)
    message = ingest(account, dsn(GOOD_STATUS))
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")
    client.force_login(admin)
    listing = client.get(reverse("admin:mailstore_deliveryreport_changelist"))
    assert listing.status_code == 200 and b"envelope_id" in listing.content
    detail = client.get(
        reverse("admin:mailstore_deliveryreport_change", args=[message.delivery_report.pk])
    )
    assert detail.status_code == 200 and b"5.1.1" in detail.content
    page = client.get(reverse("admin:mailstore_message_change", args=[message.pk]))
    assert page.status_code == 200 and b"bob@example.org failed 5.1.1" in page.content


def test_report_in_another_account_of_the_same_owner_matches(account, user):
    other = Account.objects.create(
        owner=user, provider=Account.Provider.LOCAL, email_address="alice@example.net"
    )
    sent = outbound(other)
    ingest(account, dsn(GOOD_STATUS))
    assert recipient(sent).status == "bounced"


def test_a_failure_to_record_a_report_never_stops_the_ingest(account, monkeypatch):
    def broken(account, found):
        raise RuntimeError("report recording broke")

    monkeypatch.setattr("messages.ingest.delivery_reports_record", broken)
    raws = [dsn(GOOD_STATUS), make_mail("Lunch")]
    result = messages_upsert(account=account, items=[incoming(r, folder="INBOX") for r in raws])
    assert result.created == 2 and not result.dead_letters
    assert "report recording broke" in result.problems[0]
    assert not DeliveryReport.objects.exists()
    assert Message.objects.get(subject="Lunch").defects == []


@pytest.mark.parametrize(
    ("action", "status", "expected"),
    [
        ("delivered", "2.0.0", "delivered"),
        ("relayed", "2.0.0", "relayed"),
        ("expanded", "2.0.0", "expanded"),
        ("delayed", "4.4.7", "delayed"),
        ("failed", "5.7.1", "bounced"),
    ],
)
def test_each_dsn_action_sets_its_recipient_status(account, action, status, expected):
    sent = outbound(account)
    fields = GOOD_STATUS.replace("Action: failed", f"Action: {action}")
    ingest(account, dsn(fields.replace("Status: 5.1.1", f"Status: {status}")))
    bob = recipient(sent)
    assert (bob.status, bob.action, bob.status_code) == (expected, action, status)
