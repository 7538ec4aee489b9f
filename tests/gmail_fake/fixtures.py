"""pytest fixtures: one fake Gmail server per test session, emptied for each test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import google_auth_httplib2
import httplib2
import pytest
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build
from googleapiclient.http import BatchHttpRequest

from tests.gmail_fake.server import GmailFake

SCOPES = ["https://www.googleapis.com/auth/gmail.modify"]


@pytest.fixture(scope="session")
def _gmail_fake() -> Iterator[GmailFake]:
    fake = GmailFake(os.environ.get("IMAP_TEST_HOST") or "127.0.0.1")
    yield fake
    fake.close()


@pytest.fixture
def gmail_server(_gmail_fake: GmailFake) -> Iterator[GmailFake]:
    _gmail_fake.reset()
    yield _gmail_fake
    _gmail_fake.reset()


def credentials(fake: GmailFake, refresh_token: str) -> Credentials:
    """Credentials as production holds them: a refresh token, no access token yet."""
    return Credentials(
        token=None,
        refresh_token=refresh_token,
        token_uri=fake.token_uri,
        client_id=fake.client_id,
        client_secret=fake.client_secret,
        scopes=SCOPES,
    )


def http(fake: GmailFake) -> httplib2.Http:
    """An httplib2 transport that trusts the fake's certificate."""
    return httplib2.Http(ca_certs=fake.ca_certs, timeout=10)


def gmail_service(fake: GmailFake, refresh_token: str):
    """The google-api-python-client service, pointed at the fake."""
    authorized = google_auth_httplib2.AuthorizedHttp(
        credentials(fake, refresh_token), http=http(fake)
    )
    return build(
        "gmail",
        "v1",
        http=authorized,
        static_discovery=True,
        cache_discovery=False,
        client_options={"api_endpoint": fake.base_url + "/"},
    )


def new_batch(fake: GmailFake, callback=None) -> BatchHttpRequest:
    """What `service.new_batch_http_request()` returns, with the fake's batch URI: the
    library builds that URI from the discovery document's rootUrl, not api_endpoint."""
    return BatchHttpRequest(callback=callback, batch_uri=fake.batch_uri)


@pytest.fixture
def gmail_settings(settings, monkeypatch, gmail_server: GmailFake) -> GmailFake:
    """Point the platform's Gmail settings at the fake (production code reads only settings),
    with retries that wait milliseconds; returns the server. The fake's token endpoint is
    plain http (see server.py), which requests-oauthlib refuses unless told otherwise."""
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    settings.GMAIL_CLIENT_ID = gmail_server.client_id
    settings.GMAIL_CLIENT_SECRET = gmail_server.client_secret
    settings.GMAIL_API_ENDPOINT = gmail_server.base_url + "/"
    settings.GMAIL_BATCH_URI = gmail_server.batch_uri
    settings.GMAIL_TOKEN_URI = gmail_server.token_uri
    settings.GMAIL_AUTH_URI = gmail_server.auth_uri
    settings.GMAIL_CA_CERTS = gmail_server.ca_certs
    settings.GMAIL_OIDC_CERTS_URL = gmail_server.certs_url
    settings.GMAIL_RETRY_BASE_SECONDS = 0.01
    return gmail_server
