"""/api/webhooks/: register, read, change, enable again, the delivery log and redelivery;
scoped to the owner; URLs the outbound guard refuses are a 400 that says why."""

from __future__ import annotations

import pytest
from django.utils import timezone

from messages.ingest import messages_upsert
from tests.conftest import incoming, token_client
from tests.mailfactory import make_mail
from webhooks.delivery import endpoint_deliver
from webhooks.models import WebhookDelivery, WebhookEndpoint
from webhooks.signing import verify

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(user):
    return token_client(user)


def ingest(account, uid=1):
    raw = make_mail(f"Message {uid}", message_id=f"<{uid}@x>")
    messages_upsert(account=account, items=[incoming(raw, folder="INBOX", uid=uid)])


def test_register_then_receive_and_read_the_log(api, account, receiver):
    created = api.post(
        "/api/webhooks/",
        {"url": receiver.url, "event_types": ["message.created"], "description": "CRM"},
        format="json",
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["secret"].startswith("whsec_")
    assert body["event_types"] == ["message.created"] and body["is_active"] is True
    endpoint = WebhookEndpoint.objects.get(pk=body["id"])
    assert body["secret"].encode() not in bytes(endpoint.secret_encrypted)  # encrypted at rest
    assert api.get(f"/api/webhooks/{endpoint.pk}/").json()["secret"] == body["secret"]

    ingest(account)
    endpoint_deliver(endpoint.pk)
    request = receiver.received[0]
    assert verify(body["secret"], request.body, request.headers["Webhook-Signature"])

    log = api.get(f"/api/webhooks/{endpoint.pk}/deliveries/").json()
    [entry] = log["results"]
    assert entry["event_type"] == "message.created"
    assert entry["status"] == "delivered" and entry["attempts"] == 1
    assert entry["response_status"] == 200 and entry["latency_ms"] >= 0
    assert entry["payload"]["data"]["subject"] == "Message 1"
    retrying = api.get(f"/api/webhooks/{endpoint.pk}/deliveries/?status=retrying").json()
    assert retrying["results"] == []
    assert api.get(f"/api/webhooks/{endpoint.pk}/deliveries/?colour=red").status_code == 400


def test_redelivery_on_demand_sends_the_same_body_again(api, user, account, receiver):
    body = api.post("/api/webhooks/", {"url": receiver.url}, format="json").json()
    ingest(account)
    endpoint_deliver(body["id"])
    first = WebhookDelivery.objects.filter(endpoint_id=body["id"]).order_by("id").first()
    sent = len(receiver.received)

    answer = api.post(f"/api/webhooks/{body['id']}/deliveries/{first.pk}/redeliver/")
    assert answer.status_code == 202 and answer.json()["status"] == "pending"
    endpoint_deliver(body["id"])
    assert len(receiver.received) == sent + 1
    assert receiver.received[-1].body == receiver.received[0].body
    first.refresh_from_db()
    assert (first.status, first.attempts) == ("delivered", 2)


def test_a_disabled_endpoint_shows_why_and_enabling_it_delivers_what_waited(api, account, receiver):
    body = api.post(
        "/api/webhooks/", {"url": receiver.url, "event_types": ["message.created"]}, format="json"
    ).json()
    receiver.status = 500
    ingest(account)
    endpoint_deliver(body["id"])
    WebhookDelivery.objects.filter(endpoint_id=body["id"]).update(
        first_failed_at=timezone.now() - timezone.timedelta(days=2), next_attempt_at=None
    )
    endpoint_deliver(body["id"])
    shown = api.get(f"/api/webhooks/{body['id']}/").json()
    assert shown["is_active"] is False
    assert "HTTP 500" in shown["disabled_reason"]

    receiver.status = 200
    enabled = api.patch(f"/api/webhooks/{body['id']}/", {"is_active": True}, format="json")
    assert enabled.json()["is_active"] is True and enabled.json()["disabled_reason"] == ""
    endpoint_deliver(body["id"])
    assert WebhookDelivery.objects.get(endpoint_id=body["id"]).status == "delivered"


def test_another_users_endpoints_are_not_found(api, django_user_model, receiver):
    bob = django_user_model.objects.create_user("bob", "bob@example.com", "pw-bob-123")
    bobs = token_client(bob).post("/api/webhooks/", {"url": receiver.url}, format="json").json()
    assert api.get("/api/webhooks/").json()["results"] == []
    for path in ("", "deliveries/"):
        assert api.get(f"/api/webhooks/{bobs['id']}/{path}").status_code == 404
    assert api.patch(f"/api/webhooks/{bobs['id']}/", {"url": receiver.url}).status_code == 404
    assert api.delete(f"/api/webhooks/{bobs['id']}/").status_code == 404
    assert WebhookEndpoint.objects.filter(pk=bobs["id"]).exists()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://hooks.example.com/x", "https://"),
        ("http://93.184.215.14/hook", "https://"),  # plain http to a host not on the allow list
        ("https://user:pw@93.184.215.14/hook", "user name or password"),
        ("https://10.1.2.3/hook", "internal network addresses"),
        ("https://[::1]:8443/hook", "internal network addresses"),
        ("https://169.254.169.254/latest", "internal network addresses"),
    ],
)
def test_urls_the_platform_may_not_reach_are_refused(api, settings, url, says):
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    answer = api.post("/api/webhooks/", {"url": url}, format="json")
    assert answer.status_code == 400
    assert says in answer.json()["error"]["fields"]["url"][0]
    assert not WebhookEndpoint.objects.exists()


def test_an_address_refused_later_is_not_contacted(api, settings, account, receiver):
    body = api.post("/api/webhooks/", {"url": receiver.url}, format="json").json()
    settings.OUTBOUND_ALLOWED_NETWORKS = []  # the operator narrowed the allow list since
    ingest(account)
    endpoint_deliver(body["id"])
    assert receiver.received == []
    failed = WebhookDelivery.objects.filter(endpoint_id=body["id"], attempts=1).get()
    assert "internal network addresses" in failed.error


def test_unknown_event_types_are_refused(api, receiver):
    answer = api.post(
        "/api/webhooks/", {"url": receiver.url, "event_types": ["message.exploded"]}, format="json"
    )
    assert answer.status_code == 400
    assert "event_types" in str(answer.json()["error"]["fields"])


def test_the_index_and_the_schema_name_the_webhooks(api, client):
    assert api.get("/api/").json()["webhooks"].endswith("/api/webhooks/")
    schema = client.get("/api/schema/?format=json").json()
    paths = schema["paths"]
    assert "/api/webhooks/" in paths
    assert "/api/webhooks/{id}/deliveries/{delivery_pk}/redeliver/" in paths
