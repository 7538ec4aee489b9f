"""The outbox through the API: compose, change, attach, send, cancel, schedule; the detail shows
the recipients and their status; every object is the owner's alone; the feed tells of it.
Dispatch is checked on the real Redis queue the provider's worker reads."""

from __future__ import annotations

import email
import email.policy
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from messages.models import OutboundMessage
from messages.outbox_states import outbound_claim, outbound_failed

from .conftest import send_tasks, waiting

pytestmark = pytest.mark.django_db

BOB = {"name": "Bob", "address": "bob@example.org"}


def compose(api, sender, **data) -> dict:
    body = {"account": sender.pk, "to": [BOB], "subject": "Hello", "text": "Hi Bob"}
    body.update(data)
    response = api.post("/api/outbound/", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_a_draft_is_composed_changed_and_sent(api, sender, empty_queues):
    draft = compose(api, sender)
    assert draft["state"] == "draft"
    assert draft["from"] == {"name": "Alice Ünïcode", "address": "alice@example.com"}
    assert [r["address"] for r in draft["recipients"]] == ["bob@example.org"]
    assert send_tasks() == []

    changed = api.patch(
        f"/api/outbound/{draft['id']}/",
        {"cc": [{"address": "carol@example.net"}], "subject": "Hello again"},
        format="json",
    ).json()
    assert changed["subject"] == "Hello again"
    assert [(r["kind"], r["address"]) for r in changed["recipients"]] == [
        ("to", "bob@example.org"),
        ("cc", "carol@example.net"),
    ]

    upload = SimpleUploadedFile("notes é.txt", b"some notes", content_type="text/plain")
    attached = api.post(
        f"/api/outbound/{draft['id']}/attachments/", {"file": upload}, format="multipart"
    )
    assert attached.status_code == 201, attached.content
    assert attached.json()["filename"] == "notes é.txt"
    assert attached.json()["size"] == 10

    sent = api.post(f"/api/outbound/{draft['id']}/send/", {}, format="json")
    assert sent.status_code == 202
    assert sent.json()["state"] == "queued"
    assert send_tasks() == [[draft["id"]]]

    outbound = OutboundMessage.objects.get(pk=draft["id"])
    mail = email.message_from_bytes(bytes(outbound.raw), policy=email.policy.default)
    assert mail["Subject"] == "Hello again"
    assert mail["Cc"] == "carol@example.net"
    [part] = list(mail.iter_attachments())
    assert (part.get_filename(), part.get_content()) == ("notes é.txt", "some notes")

    # A queued message is no draft: it cannot change, or be sent twice.
    again = api.post(f"/api/outbound/{draft['id']}/send/", {}, format="json")
    assert again.status_code == 409 and again.json()["error"]["code"] == "not_a_draft"
    patch = api.patch(f"/api/outbound/{draft['id']}/", {"subject": "x"}, format="json")
    assert patch.status_code == 409
    assert send_tasks() == [[draft["id"]]]


def test_create_and_send_in_one_call(api, sender, empty_queues):
    created = compose(
        api, sender, send=True, bcc=[{"address": "harry@example.net"}], notify_success=True
    )
    assert created["state"] == "queued"
    assert created["bcc"] == [{"name": "", "address": "harry@example.net"}]
    assert created["notify_success"] is True
    assert created["size"] > 0 and created["queued_at"]
    assert [r["status"] for r in created["recipients"]] == ["pending", "pending"]
    assert send_tasks() == [[created["id"]]]


def test_the_same_address_twice_is_one_envelope_recipient(api, sender, empty_queues):
    created = compose(api, sender, cc=[{"address": "BOB@example.org"}], send=True)
    assert [(r["kind"], r["address"]) for r in created["recipients"]] == [("to", "bob@example.org")]


def test_detail_shows_per_recipient_status_and_reports(api, sender, empty_queues):
    created = compose(api, sender, send=True, cc=[{"address": "carol@example.net"}])
    outbound = OutboundMessage.objects.get(pk=created["id"])
    outbound.recipients.filter(address="carol@example.net").update(
        status="bounced", smtp_code=250, action="failed", status_code="5.1.1"
    )
    detail = api.get(f"/api/outbound/{created['id']}/").json()
    carol = next(r for r in detail["recipients"] if r["address"] == "carol@example.net")
    assert (carol["status"], carol["status_code"], carol["smtp_code"]) == (
        "bounced",
        "5.1.1",
        250,
    )
    assert detail["reports"] == []
    assert detail["message_id"] == outbound.message_id_header


def test_list_filters_by_account_and_state(api, sender, empty_queues):
    draft = compose(api, sender)
    queued = compose(api, sender, send=True)
    listed = api.get("/api/outbound/").json()["results"]
    assert [o["id"] for o in listed] == [queued["id"], draft["id"]]
    assert "text" not in listed[0]
    by_state = api.get("/api/outbound/?state=queued").json()["results"]
    assert [o["id"] for o in by_state] == [queued["id"]]
    by_account = api.get(f"/api/outbound/?account={sender.pk}&state=draft").json()["results"]
    assert [o["id"] for o in by_account] == [draft["id"]]
    assert api.get("/api/outbound/?state=nonsense").status_code == 400


def test_another_users_outbound_mail_is_404(api, bob_api, sender, empty_queues):
    draft = compose(api, sender)
    queued = compose(api, sender, send=True)
    assert bob_api.get("/api/outbound/").json()["results"] == []
    for pk in (draft["id"], queued["id"]):
        assert bob_api.get(f"/api/outbound/{pk}/").status_code == 404
        assert (
            bob_api.patch(f"/api/outbound/{pk}/", {"subject": "x"}, format="json").status_code
            == 404
        )
        assert bob_api.post(f"/api/outbound/{pk}/send/", {}, format="json").status_code == 404
        assert bob_api.post(f"/api/outbound/{pk}/cancel/").status_code == 404
    upload = SimpleUploadedFile("x.txt", b"x")
    response = bob_api.post(
        f"/api/outbound/{draft['id']}/attachments/", {"file": upload}, format="multipart"
    )
    assert response.status_code == 404
    assert OutboundMessage.objects.get(pk=draft["id"]).state == "draft"
    assert OutboundMessage.objects.get(pk=queued["id"]).state == "queued"


def test_cancel_a_queued_message(api, sender, empty_queues):
    queued = compose(api, sender, send=True)
    response = api.post(f"/api/outbound/{queued['id']}/cancel/")
    assert response.status_code == 200
    assert response.json()["state"] == "cancelled"
    # Its task may still be on the queue: the worker's claim finds nothing to send.
    assert outbound_claim(queued["id"]) is None
    assert api.post(f"/api/outbound/{queued['id']}/cancel/").json()["state"] == "cancelled"


def test_cancel_loses_the_race_against_a_worker_that_claimed_it(api, sender, empty_queues):
    queued = compose(api, sender, send=True)
    assert outbound_claim(queued["id"]) is not None
    response = api.post(f"/api/outbound/{queued['id']}/cancel/")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "too_late"
    assert "sending" in response.json()["error"]["message"]
    assert OutboundMessage.objects.get(pk=queued["id"]).state == "sending"


def test_failed_shows_its_reason(api, sender, empty_queues):
    queued = compose(api, sender, send=True)
    outbound_claim(queued["id"])
    outbound_failed(queued["id"], "550 5.7.1 Relaying denied")
    detail = api.get(f"/api/outbound/{queued['id']}/").json()
    assert (detail["state"], detail["last_error"]) == ("failed", "550 5.7.1 Relaying denied")
    assert api.post(f"/api/outbound/{queued['id']}/cancel/").status_code == 409


def test_scheduled_send_waits_for_send_at(api, sender, empty_queues):
    send_at = timezone.now() + timedelta(minutes=30)
    created = compose(api, sender, send=True, send_at=send_at.isoformat())
    assert created["state"] == "queued"
    [task] = waiting("smtp")
    assert task["args"] == [created["id"]]
    assert abs(task["eta"] - send_at) < timedelta(seconds=1)
    # Run early (a worker that takes it before its ETA): nothing to send yet.
    assert outbound_claim(created["id"]) is None
    assert OutboundMessage.objects.get(pk=created["id"]).state == "queued"


def test_a_draft_sent_later_through_send(api, sender, empty_queues):
    draft = compose(api, sender)
    send_at = timezone.now() + timedelta(minutes=10)
    response = api.post(
        f"/api/outbound/{draft['id']}/send/", {"send_at": send_at.isoformat()}, format="json"
    )
    assert response.status_code == 202
    assert response.json()["send_at"] is not None
    [task] = waiting("smtp")
    assert abs(task["eta"] - send_at) < timedelta(seconds=1)


def test_sending_far_ahead_waits_for_the_sweeper(api, sender, empty_queues):
    created = compose(
        api, sender, send=True, send_at=(timezone.now() + timedelta(days=3)).isoformat()
    )
    assert created["state"] == "queued"
    assert waiting("smtp") == []


def test_send_at_more_than_a_year_ahead_is_refused(api, sender, empty_queues):
    later = (timezone.now() + timedelta(days=400)).isoformat()
    response = api.post(
        "/api/outbound/",
        {"account": sender.pk, "to": [BOB], "send": True, "send_at": later},
        format="json",
    )
    assert response.status_code == 400
    assert OutboundMessage.objects.count() == 0 and waiting("smtp") == []


def test_the_feed_tells_of_outbound_mail(api, sender, empty_queues):
    cursor = api.get("/api/changes/?limit=1000").json()["cursor"]
    created = compose(api, sender, send=True)
    api.post(f"/api/outbound/{created['id']}/cancel/")
    changes = api.get(f"/api/changes/?cursor={cursor}").json()["changes"]
    assert [(c["type"], c["kind"], c["objectId"]) for c in changes] == [
        ("outbound", "created", created["id"]),
        ("outbound", "updated", created["id"]),  # queued
        ("outbound", "updated", created["id"]),  # cancelled
    ]
    assert all(c["accountId"] == sender.pk for c in changes)


def test_the_feed_of_another_user_shows_nothing(api, bob_api, sender, empty_queues):
    cursor = bob_api.get("/api/changes/").json()["cursor"]
    compose(api, sender, send=True)
    assert bob_api.get(f"/api/changes/?cursor={cursor}").json()["changes"] == []


def test_composing_is_throttled(api, sender, settings, empty_queues):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
            "send": "2/minute",
        },
    }
    compose(api, sender)
    compose(api, sender)
    response = api.post("/api/outbound/", {"account": sender.pk, "to": [BOB]}, format="json")
    assert response.status_code == 429
    assert api.get("/api/outbound/").status_code == 200  # reads stay free


def test_the_outbox_is_in_the_schema(api):
    paths = api.get("/api/schema/?format=json").json()["paths"]
    for path in (
        "/api/outbound/",
        "/api/outbound/{id}/",
        "/api/outbound/{id}/send/",
        "/api/outbound/{id}/cancel/",
        "/api/outbound/{id}/attachments/",
    ):
        assert path in paths
    assert (
        "multipart/form-data"
        in paths["/api/outbound/{id}/attachments/"]["post"]["requestBody"]["content"]
    )


def test_a_draft_and_its_files_are_deleted(api, bob_api, sender, empty_queues):
    draft = compose(api, sender)
    files = [
        api.post(
            f"/api/outbound/{draft['id']}/attachments/",
            {"file": SimpleUploadedFile(name, name.encode())},
            format="multipart",
        ).json()
        for name in ("a.txt", "b.txt")
    ]
    cursor = api.get("/api/changes/?limit=1000").json()["cursor"]

    gone = f"/api/outbound/{draft['id']}/attachments/{files[0]['id']}/"
    assert bob_api.delete(gone).status_code == 404
    assert api.delete(gone).status_code == 204
    assert api.delete(gone).status_code == 404
    detail = api.get(f"/api/outbound/{draft['id']}/").json()
    assert [a["filename"] for a in detail["attachments"]] == ["b.txt"]

    assert bob_api.delete(f"/api/outbound/{draft['id']}/").status_code == 404
    assert api.delete(f"/api/outbound/{draft['id']}/").status_code == 204
    assert api.get(f"/api/outbound/{draft['id']}/").status_code == 404
    assert not OutboundMessage.objects.filter(pk=draft["id"]).exists()
    changes = api.get(f"/api/changes/?cursor={cursor}").json()["changes"]
    assert [c["kind"] for c in changes] == ["updated", "deleted"]


def test_a_queued_message_is_cancelled_before_it_is_deleted(api, sender, empty_queues):
    queued = compose(api, sender, send=True)
    refused = api.delete(f"/api/outbound/{queued['id']}/")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "not_deletable"
    assert "Cancel it first" in refused.json()["error"]["message"]
    attachment = api.delete(f"/api/outbound/{queued['id']}/attachments/1/")
    assert attachment.status_code == 409 and attachment.json()["error"]["code"] == "not_a_draft"

    api.post(f"/api/outbound/{queued['id']}/cancel/")
    assert api.delete(f"/api/outbound/{queued['id']}/").status_code == 204


def test_a_message_being_sent_is_not_deleted(api, sender, empty_queues):
    queued = compose(api, sender, send=True)
    outbound_claim(queued["id"])
    response = api.delete(f"/api/outbound/{queued['id']}/")
    assert response.status_code == 409 and "sending" in response.json()["error"]["message"]
    assert OutboundMessage.objects.get(pk=queued["id"]).state == "sending"
