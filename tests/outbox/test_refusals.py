"""Bad input is a 4xx with a clear message, and nothing is stored or queued."""

from __future__ import annotations

import pytest

from messages.models import Account, OutboundMessage
from tests.mailfactory import make_mail

from .conftest import ingest, outbound_count, send_tasks

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_queues")]

BOB = {"name": "Bob", "address": "bob@example.org"}


def post(api, sender, **data):
    body = {"account": sender.pk, "to": [BOB], "subject": "Hi", "text": "Hello", "send": True}
    body.update(data)
    return api.post("/api/outbound/", body, format="json")


def refused(response, status: int, code: str, field: str | None = None) -> None:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    if field is not None:
        assert field in error["fields"]
    assert outbound_count() == 0
    assert send_tasks() == []


@pytest.mark.parametrize(
    ("person", "code", "field"),
    [
        ({"address": "not-an-address"}, "invalid_address", "to.0.address"),
        ({"address": "bob@"}, "invalid_address", "to.0.address"),
        ({"address": "bob@exa mple.org"}, "invalid_address", "to.0.address"),
        ({"address": "Bob <bob@example.org>"}, "invalid_address", "to.0.address"),
        ({"address": "bob@example.org, eve@evil.example"}, "invalid_address", "to.0.address"),
        ({"address": '"bob@example.org"@evil.example'}, "invalid_address", "to.0.address"),
        ({"address": "bob@example.org (Bob)"}, "invalid_address", "to.0.address"),
        ({"address": "bob..x@example.org"}, "invalid_address", "to.0.address"),
        ({"address": "bob@-example-.org"}, "invalid_address", "to.0.address"),
        ({"address": "bøb@example.org"}, "invalid_address", "to.0.address"),
        (
            {"name": "ceo@bank.example", "address": "eve@evil.example"},
            "invalid_name",
            "to.0.name",
        ),
        (
            {"name": "Bank <ceo@bank.example>", "address": "eve@evil.example"},
            "invalid_name",
            "to.0.name",
        ),
    ],
)
def test_addresses_that_are_not_one_plain_address(api, sender, person, code, field):
    refused(post(api, sender, to=[person]), 400, code, field)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"subject": "Hi\r\nBcc: victim@example.net"}, "subject"),
        ({"subject": "Hi\nX-Injected: 1"}, "subject"),
        ({"subject": "Hi\rthere"}, "subject"),
        ({"subject": "Hi\u2028there"}, "subject"),
        (
            {"to": [{"name": "Bob\r\nBcc: victim@example.net", "address": "bob@example.org"}]},
            "to.0.name",
        ),
        ({"to": [{"address": "bob@example.org\r\nBcc: victim@example.net"}]}, "to.0.address"),
        ({"cc": [{"address": "bob@example.org\n"}]}, "cc.0.address"),
        ({"bcc": [{"address": "\nbob@example.org"}]}, "bcc.0.address"),
    ],
)
def test_header_injection_is_refused(api, sender, data, field):
    refused(post(api, sender, **data), 400, "header_injection", field)


def test_nul_is_refused(api, sender):
    response = post(api, sender, subject="Hi\x00there")
    assert response.status_code == 400
    assert "subject" in response.json()["error"]["fields"]
    assert outbound_count() == 0 and send_tasks() == []


def test_no_recipients(api, sender):
    refused(post(api, sender, to=[]), 400, "no_recipients", "to")


def test_oversized_by_the_accounts_limit(api, sender):
    sender.sync_settings = {"sendMaxBytes": 4000}
    sender.save()
    response = post(api, sender, text="x" * 5000)
    refused(response, 400, "too_large")
    assert "4000" in response.json()["error"]["message"]
    accepted = post(api, sender, text="x" * 1000)
    assert accepted.status_code == 201
    assert send_tasks() == [[accepted.json()["id"]]]  # the check above could see a task


def test_oversized_by_the_default_limit(api, sender, settings):
    settings.OUTBOUND_MAX_MESSAGE_BYTES = 3000
    refused(post(api, sender, text="y" * 4000), 400, "too_large")


def test_unknown_account_is_404(api, sender):
    refused(post(api, sender, account=999_999), 404, "not_found", "account")


def test_another_users_account_is_404(api, bob_sender):
    refused(post(api, bob_sender), 404, "not_found", "account")


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (Account.Status.PAUSED, "account_paused"),
        (Account.Status.AUTH_ERROR, "account_auth_error"),
        (Account.Status.DELETING, "account_deleting"),
    ],
)
def test_an_account_that_does_not_send_now_is_409(api, sender, status, code):
    sender.status = status
    sender.save()
    refused(post(api, sender), 409, code)


def test_a_paused_account_keeps_its_drafts_but_does_not_send_them(api, sender):
    sender.status = Account.Status.PAUSED
    sender.save()
    draft = post(api, sender, send=False)
    assert draft.status_code == 201
    response = api.post(f"/api/outbound/{draft.json()['id']}/send/", {}, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "account_paused"
    assert OutboundMessage.objects.get().state == "draft"
    assert send_tasks() == []


def test_a_provider_that_cannot_send(api, account):
    refused(post(api, account), 400, "cannot_send", "account")


@pytest.mark.parametrize("field", ["reply_to_message", "forward_of"])
def test_replying_to_or_forwarding_another_owners_message_is_404(api, sender, bob_sender, field):
    theirs = ingest(bob_sender, make_mail("Bob's", message_id="<bobs@x>"), uid=1)
    refused(post(api, sender, **{field: theirs.pk}), 404, "not_found", field)


def test_another_owners_attachment_is_404(api, sender, bob_sender):
    theirs = ingest(
        bob_sender, make_mail("Bob's", attachments=[("b.txt", "text/plain", b"bob")]), uid=1
    )
    attachment = theirs.attachments.get()
    refused(post(api, sender, attachments=[attachment.pk]), 404, "not_found", "attachments.0")


def test_send_at_needs_send(api, sender):
    response = post(api, sender, send=False, send_at="2030-01-01T00:00:00Z")
    assert response.status_code == 400
    assert "send_at" in response.json()["error"]["fields"]
    assert outbound_count() == 0


def test_a_filename_with_a_line_break_is_refused(api, sender):
    draft = post(api, sender, send=False).json()
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("notes.txt", b"notes", content_type="text/plain")
    response = api.post(
        f"/api/outbound/{draft['id']}/attachments/",
        {"file": upload, "filename": "notes.txt\r\nX-Injected: 1"},
        format="multipart",
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "header_injection"
    assert OutboundMessage.objects.get().attachments.count() == 0


def test_attachments_over_the_limit_are_refused_at_upload(api, sender):
    from django.core.files.uploadedfile import SimpleUploadedFile

    sender.sync_settings = {"sendMaxBytes": 5000}
    sender.save()
    draft = post(api, sender, send=False).json()
    url = f"/api/outbound/{draft['id']}/attachments/"
    first = SimpleUploadedFile("a.bin", b"a" * 3000)
    assert api.post(url, {"file": first}, format="multipart").status_code == 201
    second = SimpleUploadedFile("b.bin", b"b" * 3000)
    response = api.post(url, {"file": second}, format="multipart")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "too_large"
    assert OutboundMessage.objects.get().attachments.count() == 1
