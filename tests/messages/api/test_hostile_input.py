"""Inputs that used to crash the API (500) are 400s in the error shape; error reports (the
DEBUG page) never show a password."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from messages import providers, services

pytestmark = pytest.mark.django_db


def assert_error(response, status=400, code=None):
    assert response.status_code == status, response.content[:300]
    error = response.json()["error"]
    assert set(error) <= {"code", "message", "fields"} and error["message"]
    if code:
        assert error["code"] == code
    return error


@pytest.mark.parametrize("depth", [33, 1000, 100_000])
@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_deeply_nested_json_is_a_parse_error(client, depth, opener):
    closer = "]" if opener == "[" else "}"
    body = opener * depth + "1" + closer * depth
    response = client.generic("POST", "/api/auth/token/", body, content_type="application/json")
    assert_error(response, code="parse_error")


def test_nesting_within_the_limit_is_parsed(api, account):
    body = {"display_name": "x", "sync_settings": {"skip_folders": [["a"] * 1] * 1}}
    nested = json.dumps(body)
    response = api.generic(
        "PATCH", f"/api/accounts/{account.pk}/", nested, content_type="application/json"
    )
    assert response.status_code == 400  # a list of lists is the wrong type, not a crash
    assert "sync_settings.skip_folders" in " ".join(response.json()["error"]["fields"])


def test_brackets_inside_strings_do_not_count(api, account):
    name = "[" * 500
    response = api.patch(
        f"/api/accounts/{account.pk}/", {"display_name": name[:255]}, format="json"
    )
    assert response.status_code == 200


def test_a_body_above_the_upload_limit_is_refused(client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = json.dumps({"username": "a" * 2000, "password": "x"})
    response = client.generic("POST", "/api/auth/token/", body, content_type="application/json")
    assert_error(response, code="parse_error")


@pytest.mark.parametrize("dashes", [1, 32, 33, 100, 999])
def test_runs_of_dashes_in_a_search_are_not_a_crash(api, mailbox, dashes):
    response = api.get("/api/messages/", {"q": "-" * dashes})
    if response.status_code != 200:
        assert "q" in assert_error(response, code="invalid")["fields"]


def test_a_search_of_33_dashes_is_a_400(api, mailbox):
    error = assert_error(api.get("/api/messages/", {"q": "-" * 33}), code="invalid")
    assert error["fields"] == {"q": ["This search cannot be understood."]}


def test_a_search_still_finds_after_a_refused_one(api, mailbox):
    api.get("/api/messages/", {"q": "-" * 40})
    found = api.get("/api/messages/", {"q": "quarterly"}).json()["results"]
    assert [m["subject"] for m in found] == ["Quarterly report"]


def test_an_overlong_search_is_refused(api, mailbox):
    assert_error(api.get("/api/messages/", {"q": "word " * 300}), code="invalid")


@given(q=st.text(alphabet="-!|&():*<>\"' orandtx\\", min_size=1, max_size=120))
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
def test_search_operators_never_crash(api, mailbox, q):
    response = api.get("/api/messages/", {"q": q})
    assert response.status_code in (200, 400), (q, response.status_code)


@pytest.mark.parametrize("param", ["after", "before"])
@pytest.mark.parametrize(
    ("offset", "status"),
    [("+15:59", 200), ("-15:59", 200), ("+16:00", 400), ("-16:00", 400), ("+23:59", 400)],
)
def test_utc_offsets_postgresql_cannot_store_are_a_400(api, mailbox, param, offset, status):
    url = f"/api/messages/?{param}={quote('2026-01-01T00:00:00' + offset)}"
    response = api.get(url)
    if status == 200:
        assert response.status_code == 200
    else:
        assert param in assert_error(response, code="invalid")["fields"]


def cursor(values, reverse=False):
    token = json.dumps({"p": values, "r": reverse}).encode()
    return base64.urlsafe_b64encode(token).decode().rstrip("=")


@pytest.mark.parametrize("offset", ["+16:00", "-23:59"])
def test_a_cursor_with_an_impossible_utc_offset_is_a_400(api, mailbox, offset):
    url = f"/api/messages/?cursor={cursor([f'2026-01-01T00:00:00{offset}', 5])}"
    assert_error(api.get(url), code="invalid_cursor")


def test_a_cursor_with_a_storable_offset_still_works(api, mailbox):
    url = f"/api/messages/?cursor={cursor(['2099-01-01T00:00:00+15:00', 5])}"
    assert api.get(url).status_code == 200


def test_the_raw_download_is_sandboxed_like_attachments(api, mailbox):
    response = api.get(f"/api/messages/{mailbox.report.pk}/raw/")
    assert response.status_code == 200
    assert response["Content-Security-Policy"] == "sandbox; default-src 'none'"
    assert response["X-Content-Type-Options"] == "nosniff"


# Error reports ------------------------------------------------------------------------------
CANARY = "canary-imap-password-5f2c"
URL_SECRET = "canary-url-password-9e1d"


@pytest.fixture
def debug_page(settings, monkeypatch, api):
    """A crash while creating an account, rendered by Django's DEBUG page."""
    settings.DEBUG = True
    settings.REDIS_URL = f"redis://:{URL_SECRET}@127.0.0.1:6379/0"
    settings.CELERY_BROKER_URL = settings.REDIS_URL

    def crash(*, owner, provider, data):
        password = data["password"]  # noqa: F841 (a local the page would show)
        raise RuntimeError("boom")

    monkeypatch.setattr(services, "account_create", crash)
    # Local accounts take no password: let this one take it, to reach the crash with it.
    monkeypatch.setattr(providers.get_adapter("local"), "requires_credentials", True)
    api.raise_request_exception = False
    response = api.post(
        "/api/accounts/",
        {"provider": "local", "email_address": "c@example.com", "password": CANARY},
        format="json",
        DATABASE_URL=f"postgres://app:{URL_SECRET}@db.internal/app",
        HTTP_X_FORWARDED_FOR="203.0.113.9",
    )
    assert response.status_code == 500
    return response.content.decode()


def test_the_debug_page_shows_no_password(debug_page):
    assert "RuntimeError" in debug_page and "boom" in debug_page, "the page did render"
    assert "REDIS_URL" in debug_page and "DATABASE_URL" in debug_page
    assert CANARY not in debug_page
    assert URL_SECRET not in debug_page
    assert "redis://:********************@127.0.0.1:6379/0" in debug_page


def test_form_passwords_are_hidden_from_reports(rf):
    from messages.api.errors import SafeExceptionReporterFilter

    request = rf.post("/admin/smtp_sync/", {"password": CANARY, "new_password": CANARY, "x": "1"})
    cleansed = SafeExceptionReporterFilter().get_post_parameters(request)
    assert CANARY not in repr(dict(cleansed)) and cleansed["x"] == "1"
