"""The outbox in the admin: state, last error and recipients readable; bodies only with the
mail-content permission (like messages); the cancel action; the MIME bytes never shown."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils.html import escape

from messages.models import OutboundMessage
from messages.outbox import outbound_create
from messages.outbox_states import outbound_claim, outbound_failed
from tests.messages.test_admin import staff

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_queues")]

BODY = "body-canary-7c1f"


@pytest.fixture
def outbox(user, sender):
    def make(**data) -> OutboundMessage:
        return outbound_create(
            user=user,
            data={
                "account": sender.pk,
                "to": [{"name": "Bob", "address": "bob@example.org"}],
                "bcc": [{"name": "", "address": "harry@example.net"}],
                "subject": "Quarterly numbers",
                "text": BODY,
                **data,
            },
        )

    queued = make(send=True)
    failed = make(send=True, subject="Refused one")
    outbound_claim(failed.pk)
    outbound_failed(failed.pk, "550 5.7.1 Relaying denied by the server")
    draft = make(subject="Still a draft")
    return {"queued": queued, "failed": failed, "draft": draft}


def change_url(outbound: OutboundMessage) -> str:
    return reverse("admin:mailstore_outboundmessage_change", args=[outbound.pk])


def test_list_shows_state_and_last_error(client, django_user_model, outbox, sender):
    op = staff(django_user_model, client, "mailstore.view_outboundmessage", owning=[sender])
    page = op.get(reverse("admin:mailstore_outboundmessage_changelist")).content.decode()
    assert "Quarterly numbers" in page and "Refused one" in page
    assert "550 5.7.1 Relaying denied" in page
    assert "queued" in page and "failed" in page


def test_page_shows_recipients_but_body_needs_the_content_permission(
    client, django_user_model, outbox, sender
):
    op = staff(django_user_model, client, "mailstore.view_outboundmessage", owning=[sender])
    page = op.get(change_url(outbox["queued"]))
    assert page.status_code == 200
    text = page.content.decode()
    assert "harry@example.net" in text and "bob@example.org" in text
    assert escape(outbox["queued"].message_id_header) in text
    assert BODY not in text
    assert "Content-Transfer-Encoding" not in text  # the MIME bytes are never shown

    user = django_user_model.objects.get(username="op")
    user.user_permissions.add(
        Permission.objects.get(content_type__app_label="mailstore", codename="read_mail_content")
    )
    assert BODY in op.get(change_url(outbox["queued"])).content.decode()


def test_staff_without_permission_sees_nothing(client, django_user_model, outbox):
    op = staff(django_user_model, client)
    assert op.get(reverse("admin:mailstore_outboundmessage_changelist")).status_code == 403
    assert op.get(change_url(outbox["queued"])).status_code == 403


def test_the_cancel_action(client, django_user_model, outbox, sender):
    op = staff(
        django_user_model,
        client,
        "mailstore.view_outboundmessage",
        "mailstore.change_outboundmessage",
        owning=[sender],
    )
    ids = [o.pk for o in outbox.values()]
    response = op.post(
        reverse("admin:mailstore_outboundmessage_changelist"),
        {"action": "cancel", "_selected_action": ids},
        follow=True,
    )
    assert response.status_code == 200
    states = dict(OutboundMessage.objects.values_list("subject", "state"))
    assert states == {
        "Quarterly numbers": "cancelled",
        "Still a draft": "cancelled",
        "Refused one": "failed",
    }
    text = response.content.decode()
    assert "Cancelled 2 message(s)." in text and "1 message(s) were already" in text


def test_cancel_needs_the_change_permission(client, django_user_model, outbox):
    op = staff(django_user_model, client, "mailstore.view_outboundmessage")
    op.post(
        reverse("admin:mailstore_outboundmessage_changelist"),
        {"action": "cancel", "_selected_action": [outbox["queued"].pk]},
    )
    assert OutboundMessage.objects.get(pk=outbox["queued"].pk).state == "queued"
