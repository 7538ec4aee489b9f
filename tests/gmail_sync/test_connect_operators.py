"""Operators connecting Gmail accounts: the admin's "Connect a Gmail account" through Google's
consent screen, and `manage.py add_account --provider gmail` with a refresh token."""

from __future__ import annotations

import urllib.parse

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from emailplatform import topics
from gmail_sync.models import GmailSettings
from messages.models import Account
from tests.messages.api.conftest import queued

ALICE_GMAIL = "alice@gmail.com"


@pytest.fixture
def root(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")


def test_staff_connect_an_account_for_a_user_in_the_admin(
    client, root, user, gmail_settings, django_user_model, django_capture_on_commit_callbacks
):
    gmail_settings.add_user(ALICE_GMAIL)
    client.force_login(root)
    changelist = client.get(reverse("admin:gmail_sync_gmailsettings_changelist"))
    connect_url = reverse("admin:gmail_sync_gmailsettings_connect")
    assert connect_url in changelist.content.decode()
    assert client.get(reverse("admin:gmail_sync_gmailsettings_add")).url == connect_url
    assert client.get(connect_url).status_code == 200

    to_google = client.post(connect_url, {"owner": user.pk})
    assert to_google.status_code == 302
    assert to_google.url.startswith(gmail_settings.auth_uri + "?")
    back = urllib.parse.urlsplit(gmail_settings.consent(to_google.url, ALICE_GMAIL))

    # Another staff user's browser cannot finish what root started.
    other = django_user_model.objects.create_superuser("ops", "ops@example.com", "pw-ops-123")
    intruder = client.__class__()
    intruder.force_login(other)
    assert intruder.get(f"{back.path}?{back.query}").status_code == 403
    assert not Account.objects.filter(provider="gmail").exists()

    to_google = client.post(connect_url, {"owner": user.pk})
    back = urllib.parse.urlsplit(gmail_settings.consent(to_google.url, ALICE_GMAIL))
    with django_capture_on_commit_callbacks(execute=True):
        done = client.get(f"{back.path}?{back.query}")
    account = Account.objects.get(provider="gmail")
    assert account.owner == user and account.email_address == ALICE_GMAIL
    assert done.status_code == 302
    assert done.url == reverse("admin:mailstore_account_change", args=[account.pk])
    token = account.get_credentials()["refresh_token"]
    assert f"Gmail account {ALICE_GMAIL} connected." in client.get(done.url).content.decode()
    for url in (
        done.url,
        reverse("admin:gmail_sync_gmailsettings_change", args=[account.pk]),
        reverse("admin:gmail_sync_gmailsettings_changelist"),
    ):
        page = client.get(url)
        assert page.status_code == 200 and token not in page.content.decode()


def test_staff_without_the_add_permission_cannot_start(client, django_user_model, gmail_settings):
    staff = django_user_model.objects.create_user("viewer", "v@example.com", "pw", is_staff=True)
    client.force_login(staff)
    response = client.get(reverse("admin:gmail_sync_gmailsettings_connect"))
    assert response.status_code == 403


def test_add_account_connects_a_refresh_token_and_reconnects_it(
    user, gmail_settings, monkeypatch, django_capture_on_commit_callbacks
):
    queued(topics.QUEUE_FULL_SYNC)
    _, token = gmail_settings.add_user(ALICE_GMAIL)
    monkeypatch.setenv("GMAIL_TOKEN", token)
    args = ["add_account", "--provider", "gmail", "--owner", user.username]
    with django_capture_on_commit_callbacks(execute=True):
        call_command(*args, "--refresh-token-env", "GMAIL_TOKEN")
    account = Account.objects.get(provider="gmail")
    assert (account.owner, account.email_address) == (user, ALICE_GMAIL)
    assert account.get_credentials() == {"refresh_token": token}
    [(name, [payload])] = queued(topics.QUEUE_FULL_SYNC)
    assert name == "gmail_sync.full_sync" and payload["accountId"] == account.pk

    Account.objects.filter(pk=account.pk).update(status="auth_error", auth_failures=2)
    GmailSettings.objects.filter(account=account).update(history_id=77)
    gmail_settings.tokens.revoke(token)
    monkeypatch.setenv("GMAIL_TOKEN", token)
    with pytest.raises(CommandError, match="auth_failed"):
        call_command(*args, "--refresh-token-env", "GMAIL_TOKEN")
    new_token = gmail_settings.tokens.grant(ALICE_GMAIL)
    monkeypatch.setenv("GMAIL_TOKEN", new_token)
    call_command(*args, "--refresh-token-env", "GMAIL_TOKEN", "--no-sync")
    account.refresh_from_db()
    assert Account.objects.filter(provider="gmail").count() == 1
    assert (account.status, account.auth_failures) == ("active", 0)
    assert account.get_credentials() == {"refresh_token": new_token}
    assert GmailSettings.objects.get(account=account).history_id == 77


def test_add_account_refuses_a_token_without_the_gmail_scopes(user, gmail_settings, monkeypatch):
    gmail_settings.add_user(ALICE_GMAIL)
    modify_only = gmail_settings.tokens.grant(
        ALICE_GMAIL, ["https://www.googleapis.com/auth/gmail.modify"]
    )
    monkeypatch.setenv("GMAIL_TOKEN", modify_only)
    args = ["add_account", "--provider", "gmail", "--owner", user.username]
    with pytest.raises(CommandError, match=r"scope_missing: .*missing: gmail\.send"):
        call_command(*args, "--refresh-token-env", "GMAIL_TOKEN")
    assert not Account.objects.filter(provider="gmail").exists()


def test_add_account_for_imap_still_needs_its_host(user):
    with pytest.raises(CommandError, match="--imap-host is required"):
        call_command("add_account", "--owner", user.username, "--email", "x@example.com")
