"""Brute force and floods: login lockouts (django-axes) and the API's throttles.

Lockouts: after AXES_FAILURE_LIMIT (10) wrong passwords for one username from one address, the
token endpoint and the admin login answer 429 with Retry-After (the cool-off, 15 minutes),
even to the right password; another address still logs in (never a lockout by username
alone). Throttles run with the production rates of emailplatform/settings.py, or with a rate
stated in the test.
"""

from __future__ import annotations

import pytest
from django.conf import settings as django_settings

from messages.models import Account

from .conftest import token_client

pytestmark = pytest.mark.django_db

LIMIT = django_settings.AXES_FAILURE_LIMIT
COOL_OFF = int(django_settings.AXES_COOLOFF_TIME.total_seconds())


def token_login(client, password: str, address: str = "192.0.2.10"):
    return client.post(
        "/api/auth/token/",
        {"username": "alice", "password": password},
        content_type="application/json",
        REMOTE_ADDR=address,
    )


def test_the_limits_are_the_documented_ones():
    assert (LIMIT, COOL_OFF) == (10, 15 * 60)
    assert django_settings.AXES_LOCKOUT_PARAMETERS == [["username", "ip_address"]]


def test_token_endpoint_locks_out_a_username_and_address_after_the_limit(client, user):
    answers = [token_login(client, f"wrong-{i}").status_code for i in range(LIMIT + 5)]
    assert answers == [400] * (LIMIT - 1) + [429] * 6
    refused = token_login(client, "pw-alice-123")
    assert refused.status_code == 429, "the right password is refused while locked out"
    assert refused["Retry-After"] == str(COOL_OFF)
    assert refused.json() == {
        "error": {
            "code": "locked_out",
            "message": "Too many failed login attempts: try again later.",
        }
    }
    assert "token" not in refused.json()
    spoofed = client.post(
        "/api/auth/token/",
        {"username": "alice", "password": "pw-alice-123"},
        content_type="application/json",
        REMOTE_ADDR="192.0.2.10",
        HTTP_X_FORWARDED_FOR="203.0.113.50",
    )
    assert spoofed.status_code == 429, "X-Forwarded-For is not trusted without NUM_PROXIES"
    # The same user from another address is not locked out: an attacker cannot lock a victim
    # out everywhere by guessing at their username.
    assert token_login(client, "pw-alice-123", address="198.51.100.7").status_code == 200


def test_a_successful_login_resets_the_count(client, user):
    for i in range(LIMIT - 1):
        assert token_login(client, f"wrong-{i}").status_code == 400
    assert token_login(client, "pw-alice-123").status_code == 200
    assert token_login(client, "wrong-again").status_code == 400


def test_admin_login_locks_out_with_429(client, django_user_model):
    django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")

    def admin_login(password: str):
        return client.post(
            "/admin/login/?next=/admin/",
            {"username": "root", "password": password},
            REMOTE_ADDR="192.0.2.20",
        )

    answers = [admin_login(f"wrong-{i}").status_code for i in range(LIMIT + 2)]
    assert answers == [200] * (LIMIT - 1) + [429] * 3
    refused = admin_login("pw-root-123")
    assert refused.status_code == 429
    assert refused["Retry-After"] == str(COOL_OFF)
    assert b"Too many failed login attempts" in refused.content
    assert "_auth_user_id" not in client.session


def test_test_connection_is_throttled_per_user(production_rates, user, account, bob):
    assert production_rates["test_connection"] == "6/minute"
    api = token_client(user)
    url = f"/api/accounts/{account.pk}/test-connection/"
    answers = [api.post(url).status_code for _ in range(7)]
    assert 429 not in answers[:6] and answers[6] == 429
    refused = api.post(url)
    assert refused.json()["error"]["code"] == "throttled"
    assert 0 < int(refused["Retry-After"]) <= 60
    # Reads are not counted, and other users have their own budget.
    assert api.get(f"/api/accounts/{account.pk}/").status_code == 200
    bobs = Account.objects.create(owner=bob, provider="local", email_address="bob@example.com")
    assert token_client(bob).post(f"/api/accounts/{bobs.pk}/test-connection/").status_code != 429


def test_a_password_change_counts_as_a_connection_test(production_rates, api, account):
    url = f"/api/accounts/{account.pk}/"
    answers = [api.patch(url, {"password": f"pw-{i}"}, format="json").status_code for i in range(7)]
    assert answers[6] == 429 and 429 not in answers[:6]
    renamed = api.patch(url, {"display_name": "still fine"}, format="json")
    assert renamed.status_code == 200


def test_sync_requests_are_throttled(production_rates, api, account, empty_queues):
    assert production_rates["sync"] == "12/minute"
    url = f"/api/accounts/{account.pk}/sync/"
    answers = [api.post(url, {"full": True}, format="json").status_code for _ in range(13)]
    assert 429 not in answers[:12] and answers[12] == 429


def test_account_creation_is_throttled(production_rates, api):
    assert production_rates["account_create"] == "10/hour"
    answers = [
        api.post(
            "/api/accounts/",
            {"provider": "local", "email_address": f"a{i}@example.com"},
            format="json",
        ).status_code
        for i in range(11)
    ]
    assert answers == [201] * 10 + [429]
    refused = api.post(
        "/api/accounts/", {"provider": "local", "email_address": "z@example.com"}, format="json"
    )
    assert 3000 < int(refused["Retry-After"]) <= 3600
    assert api.get("/api/accounts/").status_code == 200


def test_every_request_counts_against_the_users_rate(settings, api, bob_api):
    """The per-user budget, with a stated rate of 5 a minute (production: 1200)."""
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
            "user": "5/minute",
        },
    }
    answers = [api.get("/api/messages/").status_code for _ in range(6)]
    assert answers == [200] * 5 + [429]
    assert bob_api.get("/api/messages/").status_code == 200


def test_anonymous_requests_are_throttled_per_address(settings, client):
    """Anonymous budget (the token endpoint, the schema), stated rate 3 a minute (prod: 60)."""
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
            "anon": "3/minute",
        },
    }
    body = {"username": "nobody", "password": "x"}
    answers = [
        client.post("/api/auth/token/", body, content_type="application/json").status_code
        for _ in range(4)
    ]
    assert answers == [400, 400, 400, 429]
    spoofed = client.post(
        "/api/auth/token/", body, content_type="application/json", HTTP_X_FORWARDED_FOR="1.2.3.4"
    )
    assert spoofed.status_code == 429, "X-Forwarded-For is not trusted without NUM_PROXIES"
    other = client.post(
        "/api/auth/token/", body, content_type="application/json", REMOTE_ADDR="192.0.2.99"
    )
    assert other.status_code == 400


def test_the_window_slides_and_refused_requests_do_not_count(settings, api, monkeypatch):
    """Rate 2 a minute: a third request within the minute waits until the first is a minute
    old; the refused ones never count, so a client that keeps asking is not locked out."""
    from messages.api.throttling import UserThrottle

    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
            "user": "2/minute",
        },
    }
    clock = [1_000_000.0]
    monkeypatch.setattr(UserThrottle, "timer", lambda self: clock[0])

    def ask_at(seconds: float):
        clock[0] = 1_000_000.0 + seconds
        return api.get("/api/accounts/")

    assert ask_at(0).status_code == 200 and ask_at(20).status_code == 200
    refused = ask_at(30)
    assert refused.status_code == 429 and refused["Retry-After"] == "30"
    assert [ask_at(t).status_code for t in (40, 50, 59)] == [429] * 3
    assert ask_at(60.5).status_code == 200, "the first request left the window"
    assert ask_at(61).status_code == 429
    assert ask_at(80.5).status_code == 200, "the second one left it too"
