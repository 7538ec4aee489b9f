"""Connecting a Gmail account through Google's consent screen (the local Gmail API plays
Google): the API's start URL, the consent, the callback; refusals store nothing."""

from __future__ import annotations

import logging
import time
import urllib.parse

import pytest
from django.db import connection
from django.test import Client

from emailplatform import topics
from gmail_sync.client import SCOPES
from gmail_sync.models import GmailSettings
from messages.models import Account, ChangeEvent
from tests.conftest import token_client
from tests.messages.api.conftest import broker, queued

ALICE_GMAIL = "alice@gmail.com"
MODIFY, SEND = SCOPES
CALLBACK = "http://testserver/gmail/oauth/callback"


@pytest.fixture
def empty_queues():
    for name in topics.ALL_QUEUES:
        broker().delete(name)
    yield
    for name in topics.ALL_QUEUES:
        broker().delete(name)


@pytest.fixture
def api(user):
    return token_client(user)


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", "bob@example.com", "pw-bob-123")


def query_of(url: str) -> dict[str, str]:
    return {k: v[-1] for k, v in urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).items()}


def start(api) -> str:
    response = api.post("/api/accounts/gmail/authorize/")
    assert response.status_code == 200, response.content
    return response.json()["authorization_url"]


def come_back(browser: Client, redirect_url: str, capture):
    """The browser following Google's redirect to the platform."""
    parts = urllib.parse.urlsplit(redirect_url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == CALLBACK
    with capture(execute=True):
        return browser.get(f"{parts.path}?{parts.query}")


def row_text(account: Account) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT row_to_json(a)::text FROM mailstore_account a WHERE id = %s", [account.pk]
        )
        return cursor.fetchone()[0]


def test_the_web_flow_connects_the_account_with_its_token_encrypted(
    gmail_settings, api, user, empty_queues, caplog, django_capture_on_commit_callbacks
):
    caplog.set_level(logging.DEBUG)
    _, playground_token = gmail_settings.add_user(ALICE_GMAIL)
    url = start(api)
    asked = query_of(url)
    assert url.startswith(gmail_settings.auth_uri + "?")
    assert asked["scope"].split() == list(SCOPES)
    assert asked["access_type"] == "offline" and asked["prompt"] == "consent"
    assert asked["code_challenge_method"] == "S256" and len(asked["code_challenge"]) == 43
    assert asked["redirect_uri"] == CALLBACK and len(asked["state"]) >= 43

    page = come_back(
        Client(), gmail_settings.consent(url, ALICE_GMAIL), django_capture_on_commit_callbacks
    )

    assert page.status_code == 200
    assert ALICE_GMAIL in page.content.decode()
    assert page["Referrer-Policy"] == "no-referrer"
    # What a connection costs at Google: the code exchange, one refresh and users.getProfile.
    assert (gmail_settings.tokens.exchanges, gmail_settings.tokens.refreshes) == (1, 1)
    assert gmail_settings.calls == ["GET profile"]
    account = Account.objects.get(owner=user, provider="gmail")
    assert account.email_address == ALICE_GMAIL and account.status == "active"
    refresh_token = gmail_settings.tokens.issued(ALICE_GMAIL)[-1]
    assert refresh_token != playground_token
    assert account.get_credentials() == {"refresh_token": refresh_token}
    assert refresh_token.encode() not in bytes(account.credentials_encrypted)
    assert refresh_token not in row_text(account)
    listed = api.get("/api/accounts/").content.decode()
    assert refresh_token not in listed and refresh_token not in page.content.decode()
    assert refresh_token not in caplog.text
    assert gmail_settings.client_secret not in caplog.text
    assert api.get(f"/api/accounts/{account.pk}/").json()["settings"] == {
        "include_spam_trash": False,
        "watch_scope": "inbox",
        "scopes": sorted(SCOPES),
    }
    [(name, [payload])] = queued(topics.QUEUE_FULL_SYNC)
    assert name == "gmail_sync.full_sync" and payload["accountId"] == account.pk
    assert ChangeEvent.objects.filter(account_id=account.pk, kind="created").count() == 1


def _nothing_stored(gmail_settings) -> None:
    assert not Account.objects.filter(provider="gmail").exists()
    assert queued(topics.QUEUE_FULL_SYNC) == []


@pytest.mark.parametrize("state", ["", "made-up-state", None])
def test_a_callback_without_a_known_state_stores_nothing(
    gmail_settings, api, empty_queues, django_capture_on_commit_callbacks, state
):
    gmail_settings.add_user(ALICE_GMAIL)
    back = query_of(gmail_settings.consent(start(api), ALICE_GMAIL))
    if state is None:
        del back["state"]
    else:
        back["state"] = state
    page = come_back(
        Client(), f"{CALLBACK}?{urllib.parse.urlencode(back)}", django_capture_on_commit_callbacks
    )
    assert page.status_code == 400
    assert "invalid, was already used or has expired" in page.content.decode()
    assert gmail_settings.tokens.exchanges == 0
    _nothing_stored(gmail_settings)


def test_a_state_works_once(gmail_settings, api, empty_queues, django_capture_on_commit_callbacks):
    gmail_settings.add_user(ALICE_GMAIL)
    url = start(api)
    back = gmail_settings.consent(url, ALICE_GMAIL)
    assert come_back(Client(), back, django_capture_on_commit_callbacks).status_code == 200
    # A fresh, valid code with the spent state (the user consents again on the same page).
    again = come_back(
        Client(), gmail_settings.consent(url, ALICE_GMAIL), django_capture_on_commit_callbacks
    )
    assert again.status_code == 400
    assert gmail_settings.tokens.exchanges == 1
    assert Account.objects.filter(provider="gmail").count() == 1


def test_an_expired_state_stores_nothing(
    gmail_settings, api, settings, empty_queues, django_capture_on_commit_callbacks
):
    settings.GMAIL_OAUTH_STATE_SECONDS = 1
    gmail_settings.add_user(ALICE_GMAIL)
    back = gmail_settings.consent(start(api), ALICE_GMAIL)
    time.sleep(1.2)
    assert come_back(Client(), back, django_capture_on_commit_callbacks).status_code == 400
    _nothing_stored(gmail_settings)


def test_a_flow_started_by_alice_is_refused_to_bob(
    gmail_settings, api, bob, empty_queues, django_capture_on_commit_callbacks
):
    gmail_settings.add_user(ALICE_GMAIL)
    back = gmail_settings.consent(start(api), ALICE_GMAIL)
    browser = Client()
    browser.force_login(bob)
    page = come_back(browser, back, django_capture_on_commit_callbacks)
    assert page.status_code == 403
    assert "started by another user" in page.content.decode()
    assert gmail_settings.tokens.exchanges == 0
    _nothing_stored(gmail_settings)


def test_a_grant_without_the_gmail_scopes_is_refused(
    gmail_settings, api, empty_queues, django_capture_on_commit_callbacks
):
    gmail_settings.add_user(ALICE_GMAIL)
    back = gmail_settings.consent(start(api), ALICE_GMAIL, granted=[SEND])
    page = come_back(Client(), back, django_capture_on_commit_callbacks)
    assert page.status_code == 400
    text = page.content.decode()
    assert "did not grant all the access" in text and "gmail.modify" in text
    _nothing_stored(gmail_settings)


def test_declining_on_the_consent_screen_stores_nothing(
    gmail_settings, api, empty_queues, django_capture_on_commit_callbacks
):
    gmail_settings.add_user(ALICE_GMAIL)
    back = gmail_settings.consent(start(api), ALICE_GMAIL, deny=True)
    page = come_back(Client(), back, django_capture_on_commit_callbacks)
    assert page.status_code == 400 and "you declined" in page.content.decode()
    _nothing_stored(gmail_settings)


def test_reconnecting_an_account_refused_by_google_resumes_it(
    gmail_settings, api, user, empty_queues, django_capture_on_commit_callbacks
):
    gmail_settings.add_user(ALICE_GMAIL)
    come_back(
        Client(),
        gmail_settings.consent(start(api), ALICE_GMAIL),
        django_capture_on_commit_callbacks,
    )
    account = Account.objects.get(owner=user, provider="gmail")
    old_token = account.get_credentials()["refresh_token"]
    gmail_settings.tokens.revoke(old_token)
    GmailSettings.objects.filter(account=account).update(history_id=4242)
    Account.objects.filter(pk=account.pk).update(
        status="auth_error",
        auth_failures=3,
        last_error="Google refused the account's authorization",
    )
    queued(topics.QUEUE_FULL_SYNC)
    refused = api.post(f"/api/accounts/{account.pk}/sync/", {"full": False}, format="json")
    assert refused.status_code == 409
    assert (
        "connect it again (POST /api/accounts/gmail/authorize/)"
        in refused.json()["error"]["message"]
    )
    assert "password" not in refused.json()["error"]["message"]

    page = come_back(
        Client(),
        gmail_settings.consent(start(api), ALICE_GMAIL),
        django_capture_on_commit_callbacks,
    )

    assert page.status_code == 200 and "reconnected" in page.content.decode()
    account.refresh_from_db()
    assert Account.objects.filter(owner=user, provider="gmail").count() == 1
    assert (account.status, account.auth_failures, account.last_error) == ("active", 0, "")
    new_token = account.get_credentials()["refresh_token"]
    assert new_token != old_token and new_token in gmail_settings.tokens.issued(ALICE_GMAIL)
    assert GmailSettings.objects.get(account=account).history_id == 4242
    assert queued(topics.QUEUE_FULL_SYNC) == []  # no full sync: it resumes from its history id
    gmail_tasks = queued(topics.QUEUE_GMAIL)  # and the push watch's (gmail_sync.signals)
    # (a coalesced sync request: the account's id and its trigger token)
    syncs = [(name, args[0]) for name, args in gmail_tasks if name != "gmail_sync.watch_account"]
    assert syncs == [("gmail_sync.incremental_sync", account.pk)]
    assert ChangeEvent.objects.filter(account_id=account.pk, kind="created").count() == 1
    assert ChangeEvent.objects.filter(account_id=account.pk, kind="updated").count() == 1


def test_the_authorize_endpoint(gmail_settings, api):
    assert Client().post("/api/accounts/gmail/authorize/").status_code == 401
    assert api.post("/api/accounts/imap/authorize/").status_code == 404
    assert api.post("/api/accounts/nothing/authorize/").status_code == 404
    assert api.get("/api/accounts/gmail/authorize/").status_code == 405


def test_creating_a_gmail_account_by_post_points_to_the_consent_screen(gmail_settings, api):
    gmail_settings.add_user(ALICE_GMAIL)
    body = {"provider": "gmail", "email_address": ALICE_GMAIL}
    refused = api.post("/api/accounts/", body, format="json")
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "oauth_required"
    assert "/api/accounts/gmail/authorize/" in error["message"]
    _, token = gmail_settings.add_user("carol@gmail.com")
    with_token = {**body, "settings": {"refresh_token": token}}
    assert api.post("/api/accounts/", with_token, format="json").json()["error"]["code"] == (
        "oauth_required"  # a refresh token from a user who is not staff
    )
    assert not Account.objects.filter(provider="gmail").exists()


def test_staff_may_connect_with_a_refresh_token_through_the_api(
    gmail_settings, user, empty_queues, django_capture_on_commit_callbacks
):
    user.is_staff = True
    user.save()
    staff = token_client(user)
    _, token = gmail_settings.add_user(ALICE_GMAIL)
    body = {
        "provider": "gmail",
        "email_address": "bob@gmail.com",
        "settings": {"refresh_token": token},
    }
    wrong = staff.post("/api/accounts/", body, format="json")
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "address_mismatch"
    body["email_address"] = ALICE_GMAIL
    body["settings"]["include_spam_trash"] = True
    with django_capture_on_commit_callbacks(execute=True):
        created = staff.post("/api/accounts/", body, format="json")
    assert created.status_code == 201, created.content
    assert token not in created.content.decode()
    assert created.json()["settings"]["include_spam_trash"] is True
    account = Account.objects.get(pk=created.json()["id"])
    assert account.get_credentials() == {"refresh_token": token}
    ok = staff.post(f"/api/accounts/{account.pk}/test-connection/")
    assert ok.status_code == 200
    gmail_settings.tokens.revoke(token)
    refused = staff.post(f"/api/accounts/{account.pk}/test-connection/")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "auth_failed"


def test_the_configured_redirect_uri_wins_over_the_request_and_the_body(
    gmail_settings, api, settings, empty_queues, django_capture_on_commit_callbacks
):
    settings.GMAIL_OAUTH_REDIRECT_URI = "https://mail.example.org/gmail/oauth/callback"
    gmail_settings.add_user(ALICE_GMAIL)
    response = api.post(
        "/api/accounts/gmail/authorize/",
        {"redirect_uri": "https://evil.example/steal"},
        format="json",
        HTTP_HOST="testserver",
    )
    url = response.json()["authorization_url"]
    assert query_of(url)["redirect_uri"] == settings.GMAIL_OAUTH_REDIRECT_URI
    back = urllib.parse.urlsplit(gmail_settings.consent(url, ALICE_GMAIL))
    assert back.netloc == "mail.example.org"
    with django_capture_on_commit_callbacks(execute=True):
        page = Client().get(f"{back.path}?{back.query}")  # the proxy hands it to us
    assert page.status_code == 200  # the exchange named the same redirect_uri
    assert Account.objects.filter(provider="gmail", email_address=ALICE_GMAIL).exists()
