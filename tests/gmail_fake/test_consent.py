"""The fake's web server flow: consent, then the authorization_code grant with PKCE, through
google-auth-oauthlib's Flow as production uses it, and raw token requests for the refusals."""

from __future__ import annotations

import base64
import hashlib
import urllib.parse

import httplib2
import pytest
import requests
from google_auth_oauthlib.flow import Flow
from oauthlib.oauth2.rfc6749.errors import InvalidGrantError

from tests.gmail_fake.consent import ConsentRefused
from tests.gmail_fake.fixtures import gmail_service

MODIFY = "https://www.googleapis.com/auth/gmail.modify"
SEND = "https://www.googleapis.com/auth/gmail.send"
REDIRECT = "https://platform.example/gmail/oauth/callback"


@pytest.fixture(autouse=True)
def _plain_token_endpoint(monkeypatch):
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")


def flow(fake, scopes=(MODIFY, SEND)) -> Flow:
    config = {
        "web": {
            "client_id": fake.client_id,
            "client_secret": fake.client_secret,
            "auth_uri": fake.auth_uri,
            "token_uri": fake.token_uri,
        }
    }
    return Flow.from_client_config(config, scopes=list(scopes), redirect_uri=REDIRECT)


def query_of(url: str) -> dict[str, str]:
    return {k: v[-1] for k, v in urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).items()}


def consented(fake, email="bob@gmail.com", **kwargs) -> tuple[Flow, dict[str, str]]:
    f = flow(fake)
    url, _ = f.authorization_url(prompt="consent", state="s-1", **kwargs)
    return f, query_of(fake.consent(url, email))


def test_consent_then_code_exchange_gives_a_working_refresh_token(gmail_server):
    gmail_server.add_user("bob@gmail.com")
    f, back = consented(gmail_server)
    assert back["state"] == "s-1"
    token = f.fetch_token(code=back["code"])
    assert set(token["scope"]) == {MODIFY, SEND}
    assert token["refresh_token"].startswith("1//")
    gmail = gmail_service(gmail_server, token["refresh_token"])
    assert gmail.users().getProfile(userId="me").execute()["emailAddress"] == "bob@gmail.com"


def test_a_code_works_once(gmail_server):
    gmail_server.add_user("bob@gmail.com")
    f, back = consented(gmail_server)
    f.fetch_token(code=back["code"])
    with pytest.raises(InvalidGrantError):
        f.fetch_token(code=back["code"])
    assert gmail_server.tokens.exchanges == 1


def _exchange(fake, code: str, verifier: str, redirect_uri: str = REDIRECT, secret=None):
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": verifier,
        "client_id": fake.client_id,
        "client_secret": secret or fake.client_secret,
    }
    return requests.post(fake.token_uri, data=form, timeout=10)


def test_the_verifier_must_match_the_challenge(gmail_server):
    gmail_server.add_user("bob@gmail.com")
    f, back = consented(gmail_server)
    wrong = _exchange(gmail_server, back["code"], "x" * 64)
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    # The code was spent by the failed attempt too.
    right = _exchange(gmail_server, back["code"], f.code_verifier)
    assert right.status_code == 400 and right.json()["error"] == "invalid_grant"


def test_redirect_uri_and_client_secret_are_checked(gmail_server):
    gmail_server.add_user("bob@gmail.com")
    f, back = consented(gmail_server)
    other = _exchange(gmail_server, back["code"], f.code_verifier, "https://evil.example/cb")
    assert other.json()["error"] == "redirect_uri_mismatch"
    f, back = consented(gmail_server)
    bad = _exchange(gmail_server, back["code"], f.code_verifier, secret="not-the-secret")
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"
    f, back = consented(gmail_server)
    good = _exchange(gmail_server, back["code"], f.code_verifier)  # secret in the body
    assert good.status_code == 200 and good.json()["refresh_token"]


def test_refresh_token_only_offline_and_on_first_or_forced_consent(gmail_server):
    gmail_server.add_user("bob@gmail.com")
    f = flow(gmail_server)
    url, _ = f.authorization_url(access_type="online")
    assert "refresh_token" not in f.fetch_token(
        code=query_of(gmail_server.consent(url, "bob@gmail.com"))["code"]
    )
    f = flow(gmail_server)
    url, _ = f.authorization_url()  # offline, no prompt: bob already consented once
    assert "refresh_token" not in f.fetch_token(
        code=query_of(gmail_server.consent(url, "bob@gmail.com"))["code"]
    )
    f, back = consented(gmail_server)  # prompt=consent
    assert f.fetch_token(code=back["code"])["refresh_token"]


def test_granular_consent_and_denial(gmail_server):
    gmail_server.add_user("bob@gmail.com")
    f = flow(gmail_server)
    url, _ = f.authorization_url(prompt="consent", state="s-2")
    back = query_of(gmail_server.consent(url, "bob@gmail.com", granted=[SEND]))
    answer = _exchange(gmail_server, back["code"], f.code_verifier).json()
    assert answer["scope"] == SEND
    denied = query_of(gmail_server.consent(url, "bob@gmail.com", deny=True))
    assert denied == {"error": "access_denied", "state": "s-2"}


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"client_id": "unknown"}, "invalid_client"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": "openid email"}, "invalid_scope"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": ""}, "invalid_request"),
        ({"redirect_uri": "javascript:alert(1)"}, "invalid_request"),
    ],
)
def test_consent_screen_refuses_what_google_refuses(gmail_server, change, error):
    gmail_server.add_user("bob@gmail.com")
    url, _ = flow(gmail_server).authorization_url(prompt="consent")
    parts = urllib.parse.urlsplit(url)
    query = {**query_of(url), **change}
    bad = parts._replace(query=urllib.parse.urlencode(query)).geturl()
    with pytest.raises(ConsentRefused) as refused:
        gmail_server.consent(bad, "bob@gmail.com")
    assert refused.value.error == error


def test_the_challenge_sent_is_s256_of_the_verifier(gmail_server):
    f = flow(gmail_server)
    url, _ = f.authorization_url()
    digest = hashlib.sha256(f.code_verifier.encode()).digest()
    assert query_of(url)["code_challenge"] == base64.urlsafe_b64encode(digest).decode().rstrip("=")


def test_a_browser_at_the_authorization_endpoint_is_sent_back(gmail_server):
    gmail_server.add_user("bob@gmail.com")
    url, _ = flow(gmail_server).authorization_url(
        prompt="consent", state="s-3", login_hint="bob@gmail.com"
    )
    browser = httplib2.Http(ca_certs=gmail_server.ca_certs, timeout=10)
    browser.follow_redirects = False
    response, _ = browser.request(url)
    assert response.status == 302
    back = query_of(response["location"])
    assert response["location"].startswith(REDIRECT) and back["state"] == "s-3" and back["code"]
