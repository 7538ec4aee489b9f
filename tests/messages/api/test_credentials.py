"""Account secrets are write-only: no API answer ever carries them."""

import pytest
from django.urls import reverse

from messages.models import Account
from smtp_sync.models import ImapSettings

pytestmark = pytest.mark.django_db

SECRET = "hunter2-very-secret"
TOKEN = "ya29.oauth-very-secret"


@pytest.fixture
def imap_with_secret(user, mailbox):
    account = Account.objects.create(owner=user, provider="imap", email_address="w@example.com")
    account.set_credentials({"password": SECRET, "oauth2_token": TOKEN})
    account.save()
    ImapSettings.objects.create(account=account, imap_host="imap.example.com", username="w")
    local = mailbox.account
    local.set_credentials({"password": SECRET})
    local.save()
    return account


def test_no_response_carries_a_secret(api, imap_with_secret, mailbox, monkeypatch):
    account = imap_with_secret
    urls = [
        "/api/accounts/",
        f"/api/accounts/{account.pk}/",
        f"/api/accounts/{mailbox.account.pk}/",
        f"/api/accounts/{account.pk}/folders/",
        "/api/folders/",
        "/api/threads/",
        f"/api/threads/{mailbox.report.thread_id}/",
        "/api/messages/",
        f"/api/messages/{mailbox.report.pk}/?raw_headers=true",
        "/api/changes/",
        reverse("schema"),
    ]
    bodies = [api.get(url).content.decode() for url in urls]
    bodies.append(
        api.patch(
            f"/api/accounts/{account.pk}/", {"display_name": "W"}, format="json"
        ).content.decode()
    )
    bodies.append(
        api.post(
            "/api/accounts/",
            {
                "provider": "local",
                "email_address": "x@example.com",
                "password": SECRET,
            },
            format="json",
        ).content.decode()
    )
    assert all(SECRET not in body and TOKEN not in body for body in bodies)
    assert all("credentials" not in body for body in bodies[:-3])


def test_a_refused_password_is_not_echoed(api, imap_with_secret, monkeypatch):
    from messages.providers import ProviderError, get_adapter

    def refuse(target):
        raise ProviderError(
            "login refused by imap.example.com: [AUTHENTICATIONFAILED]", code="auth_failed"
        )

    monkeypatch.setattr(get_adapter("imap"), "test_connection", refuse)
    response = api.patch(
        f"/api/accounts/{imap_with_secret.pk}/", {"password": SECRET + "-new"}, format="json"
    )
    assert response.status_code == 400
    assert SECRET not in response.content.decode()
    assert Account.objects.get(pk=imap_with_secret.pk).get_credentials()["password"] == SECRET
