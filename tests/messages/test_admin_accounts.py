"""Accounts in the admin: "Add" leads to one flow per provider, the IMAP flow makes an account
that syncs, and the account page says what the account is and how it syncs."""

from __future__ import annotations

import pytest
from django.urls import reverse

from messages.models import Account, Folder, SyncRun
from smtp_sync.models import ImapSettings
from smtp_sync.sync import ImapAccountSync
from tests.mailfactory import make_mail

pytestmark = pytest.mark.django_db

ADD = reverse("admin:mailstore_account_add")
IMAP_ADD = reverse("admin:smtp_sync_imapsettings_add")
GMAIL_CONNECT = reverse("admin:gmail_sync_gmailsettings_connect")


@pytest.fixture
def root(client, django_user_model):
    user = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")
    client.force_login(user)
    return user


def imap_form(server, **changes) -> dict:
    return {
        "email_address": "new@example.com",
        "display_name": "New mailbox",
        "imap_host": server.host,
        "imap_port": server.port,
        "imap_security": "none",
        "username": server.username,
        "password": server.password,
        "smtp_host": server.host,  # resolved by the guard, not connected to
        "smtp_port": 2587,
        "smtp_security": "starttls",
        "smtp_username": "sender-login",
        "smtp_trust_self_signed": "on",
        **changes,
    }


def test_add_from_the_account_list_offers_one_flow_per_provider(client, root):
    changelist = client.get(reverse("admin:mailstore_account_changelist")).content.decode()
    assert f'href="{ADD}"' in changelist
    page = client.get(ADD)
    assert page.status_code == 200
    text = page.content.decode()
    assert f'href="{IMAP_ADD}"' in text and f'href="{GMAIL_CONNECT}"' in text
    assert client.get(IMAP_ADD).status_code == 200
    assert client.get(GMAIL_CONNECT).status_code == 200


def test_the_imap_flow_creates_an_account_that_syncs(client, root, user, imap_user):
    imap_user.append("INBOX", make_mail("Hello from the server", body="first"))
    imap_user.append("INBOX", make_mail("Second one", body="second"))

    refused = client.post(IMAP_ADD, {**imap_form(imap_user), "owner": user.pk, "password": "no"})
    assert refused.status_code == 200
    assert "Connection test failed" in refused.content.decode()
    assert not Account.objects.filter(email_address="new@example.com").exists()

    done = client.post(IMAP_ADD, {**imap_form(imap_user), "owner": user.pk})
    account = Account.objects.get(email_address="new@example.com")
    assert done.status_code == 302
    assert done.url == reverse("admin:mailstore_account_change", args=[account.pk])
    assert account.owner == user and account.display_name == "New mailbox"
    assert account.get_credentials() == {"password": imap_user.password}
    stored = ImapSettings.objects.get(account=account)
    assert (stored.imap_host, stored.imap_port, stored.imap_security) == (
        imap_user.host,
        imap_user.port,
        "none",
    )
    assert (stored.smtp_host, stored.smtp_port, stored.smtp_security) == (
        imap_user.host,
        2587,
        "starttls",
    )
    assert stored.smtp_username == "sender-login" and stored.smtp_trust_self_signed
    assert "IDLE" in stored.capabilities  # tested against the server before it was stored

    ImapAccountSync(account).sync()
    page = client.get(done.url).content.decode()
    assert "added; its first sync has started" in page
    assert "2 messages</a> in" in page
    assert imap_user.host in page and "2587" in page
    assert imap_user.password not in page


def test_the_imap_flow_applies_the_outbound_guard(client, root, settings, imap_user):
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    settings.OUTBOUND_STAFF_ALLOW_INTERNAL = False
    for field, address in (("imap_host", "10.0.0.7"), ("smtp_host", "192.168.1.1")):
        form = {**imap_form(imap_user, imap_security="ssl"), field: address, "owner": root.pk}
        page = client.post(IMAP_ADD, form)
        assert page.status_code == 200
        assert "internal network addresses are not allowed" in page.content.decode()
    assert not Account.objects.filter(email_address="new@example.com").exists()


@pytest.fixture
def synced(imap_account, imap_user):
    imap_user.append("INBOX", make_mail("One", body="one"), make_mail("Two", body="two"))
    ImapAccountSync(imap_account).sync()
    imap_account.refresh_from_db()
    return imap_account


def test_the_account_page_explains_the_account(client, root, synced):
    SyncRun.objects.create(account=synced, kind="full", progress_done=30, progress_total=120)
    text = client.get(reverse("admin:mailstore_account_change", args=[synced.pk])).content.decode()
    settings = synced.imap_settings
    assert settings.imap_host in text and str(settings.imap_port) in text
    assert "imap_security" in text and "none" in text
    folders = Folder.objects.filter(account=synced).count()
    messages_url = (
        reverse("admin:mailstore_message_changelist") + f"?account__id__exact={synced.pk}"
    )
    folders_url = reverse("admin:mailstore_folder_changelist") + f"?account__id__exact={synced.pk}"
    assert f'<a href="{messages_url}">2 messages</a>' in text.replace("&amp;", "&")
    assert f'<a href="{folders_url}">{folders} folders</a>' in text
    assert '<progress max="100" value="25"></progress> 30 / 120' in text
    assert reverse("admin:smtp_sync_imapsettings_change", args=[synced.pk]) in text
    # Sync settings are fields, not a JSON box
    assert 'name="include_attachments"' in text and 'name="window_days"' in text
    assert 'name="sync_settings"' not in text and "{}" not in text
    # The links open lists of this account's objects only.
    assert "One" in client.get(messages_url).content.decode()
    assert client.get(folders_url).status_code == 200


def test_sync_settings_are_edited_as_fields(client, root, synced):
    synced.sync_settings = {"windowDays": 30, "futureKey": "kept"}
    synced.save()
    url = reverse("admin:mailstore_account_change", args=[synced.pk])
    page = client.get(url).content.decode()
    assert 'name="window_days" value="30"' in page
    response = client.post(
        url,
        {
            "display_name": "Renamed",
            "include_attachments": "",
            "skip_folders": "Spam\nNewsletters\n",
            "window_days": "",
            "send_per_minute": "5",
            "save_sent_copy": "no",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    synced.refresh_from_db()
    assert synced.display_name == "Renamed"
    assert synced.sync_settings == {
        "futureKey": "kept",
        "includeAttachments": False,
        "skipFolders": ["Spam", "Newsletters"],
        "sendPerMinute": 5,
        "saveSentCopy": False,
    }
    bad = client.post(url, {"display_name": "x", "window_days": "0"})
    assert bad.status_code == 200 and "greater than or equal to 1" in bad.content.decode()


def test_deleting_an_account_runs_in_the_background(client, root, synced):
    url = reverse("admin:mailstore_account_delete", args=[synced.pk])
    confirm = client.get(url).content.decode()
    assert str(synced) in confirm and "One" not in confirm  # the account, not each message
    assert client.post(url, {"post": "yes"}).status_code == 302
    synced.refresh_from_db()
    assert synced.status == Account.Status.DELETING
    change = reverse("admin:mailstore_account_change", args=[synced.pk])
    late = client.post(change, {"display_name": "too late"})
    assert late.status_code == 200 and "The account is being deleted." in late.content.decode()
