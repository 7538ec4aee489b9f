"""The admin: endpoints with their state and delivery log; adding one shows its secret."""

from __future__ import annotations

import pytest

from messages.ingest import messages_upsert
from tests.conftest import incoming
from tests.mailfactory import make_mail
from webhooks.delivery import endpoint_deliver
from webhooks.models import WebhookDelivery, WebhookEndpoint
from webhooks.services import endpoint_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client, django_user_model):
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")
    client.force_login(admin)
    return client


def test_add_an_endpoint_for_a_user_and_see_its_log(staff_client, user, account, receiver):
    answer = staff_client.post(
        "/admin/webhooks/webhookendpoint/add/",
        {
            "owner": user.pk,
            "url": receiver.url,
            "description": "",
            "event_types": ["message.created"],
            "is_active": "on",
            "deliveries-TOTAL_FORMS": "0",
            "deliveries-INITIAL_FORMS": "0",
        },
        follow=True,
    )
    assert answer.status_code == 200
    endpoint = WebhookEndpoint.objects.get(owner=user)
    assert "whsec_" in answer.content.decode()
    assert endpoint.event_types == ["message.created"]

    raw = make_mail("Hello admin", message_id="<a@x>")
    messages_upsert(account=account, items=[incoming(raw, folder="INBOX", uid=1)])
    endpoint_deliver(endpoint.pk)
    page = staff_client.get(f"/admin/webhooks/webhookendpoint/{endpoint.pk}/change/").content
    assert b"message.created" in page and b"delivered" in page
    log = staff_client.get(f"/admin/webhooks/webhookdelivery/?endpoint__id__exact={endpoint.pk}")
    assert b"message.created" in log.content
    listing = staff_client.get("/admin/webhooks/webhookendpoint/").content.decode()
    assert receiver.url in listing and "ok" in listing


def test_the_admin_refuses_an_internal_url(staff_client, settings, user):
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    settings.OUTBOUND_STAFF_ALLOW_INTERNAL = False
    answer = staff_client.post(
        "/admin/webhooks/webhookendpoint/add/",
        {
            "owner": user.pk,
            "url": "https://10.0.0.5/hook",
            "deliveries-TOTAL_FORMS": "0",
            "deliveries-INITIAL_FORMS": "0",
        },
    )
    assert answer.status_code == 200
    assert b"internal network addresses" in answer.content
    assert not WebhookEndpoint.objects.exists()


def test_redeliver_from_the_admin(staff_client, user, account, receiver):
    endpoint, _ = endpoint_create(owner=user, url=receiver.url, event_types=["message.created"])
    raw = make_mail("Again", message_id="<b@x>")
    messages_upsert(account=account, items=[incoming(raw, folder="INBOX", uid=1)])
    endpoint_deliver(endpoint.pk)
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    staff_client.post(
        "/admin/webhooks/webhookdelivery/",
        {"action": "redeliver", "_selected_action": [delivery.pk]},
    )
    endpoint_deliver(endpoint.pk)
    assert len(receiver.received) == 2
