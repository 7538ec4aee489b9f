"""OAuth, quota errors and batches of the fake, through google-auth and google-api-python-client."""

from __future__ import annotations

import base64
import time

import google_auth_httplib2
import pytest
from google.auth.exceptions import RefreshError
from googleapiclient.errors import HttpError

from tests.gmail_fake.batch import MAX_PARTS
from tests.gmail_fake.fixtures import credentials, gmail_service, http, new_batch
from tests.mailfactory import make_mail


def test_refresh_gives_an_expiring_access_token(gmail_server):
    _, refresh_token = gmail_server.add_user("bob@gmail.com")
    creds = credentials(gmail_server, refresh_token)

    creds.refresh(google_auth_httplib2.Request(http(gmail_server)))

    assert creds.token.startswith("ya29.")
    assert 3000 < creds.expiry.timestamp() - time.time() < 3600


def test_revoked_refresh_token_is_invalid_grant(gmail_server):
    _, refresh_token = gmail_server.add_user("bob@gmail.com")
    gmail = gmail_service(gmail_server, refresh_token)
    gmail.users().getProfile(userId="me").execute()

    gmail_server.tokens.revoke(refresh_token)

    with pytest.raises(RefreshError, match="invalid_grant"):
        gmail.users().getProfile(userId="me").execute()


def test_no_bearer_token_is_401(gmail_server):
    gmail_server.add_user("bob@gmail.com")
    response, _ = http(gmail_server).request(f"{gmail_server.base_url}/gmail/v1/users/me/profile")
    assert response.status == 401


def test_an_expired_access_token_is_refreshed_after_its_401(gmail_server):
    _, refresh_token = gmail_server.add_user("bob@gmail.com")
    gmail = gmail_service(gmail_server, refresh_token)
    gmail.users().getProfile(userId="me").execute()

    gmail_server.tokens.expire_access_tokens()
    gmail.users().labels().list(userId="me").execute()

    assert gmail_server.tokens.refreshes == 2


@pytest.mark.parametrize(
    ("inject", "status", "reason"),
    [
        ("rate_limit_next", 429, "rateLimitExceeded"),
        ("user_rate_limit_next", 403, "userRateLimitExceeded"),
        ("backend_error_next", 500, "backendError"),
    ],
)
def test_injected_errors_surface_as_http_error_with_reason(gmail_server, inject, status, reason):
    _, refresh_token = gmail_server.add_user("bob@gmail.com")
    gmail = gmail_service(gmail_server, refresh_token)
    getattr(gmail_server, inject)(2)

    for _ in range(2):
        with pytest.raises(HttpError) as caught:
            gmail.users().getProfile(userId="me").execute()
        assert caught.value.status_code == status
        assert caught.value.error_details[0]["reason"] == reason
    assert gmail.users().getProfile(userId="me").execute()["emailAddress"] == "bob@gmail.com"


@pytest.mark.parametrize(
    "inject", ["rate_limit_next", "user_rate_limit_next", "backend_error_next"]
)
def test_the_client_recognises_each_error_as_retryable(gmail_server, inject):
    """google-api-python-client retries a 403 only when the body's reason is a rate limit:
    the fake's error shape must be the one it reads."""
    _, refresh_token = gmail_server.add_user("bob@gmail.com")
    gmail = gmail_service(gmail_server, refresh_token)
    getattr(gmail_server, inject)(1)
    request = gmail.users().getProfile(userId="me")
    request._rand = lambda: 0.0  # no backoff sleep in a test

    assert request.execute(num_retries=1)["emailAddress"] == "bob@gmail.com"
    assert gmail_server.calls == ["GET profile", "GET profile"]


def test_batch_get_raw_answers_each_part_by_its_id(gmail_server):
    mailbox, refresh_token = gmail_server.add_user("bob@gmail.com")
    gmail = gmail_service(gmail_server, refresh_token)
    raws = {}
    for i in range(3):
        raw = make_mail(f"m{i}", body=f"body {i}\n")
        raws[mailbox.add_message(raw).id] = raw
    results: dict[str, bytes] = {}
    errors: dict[str, int] = {}

    def collect(request_id, response, exception):
        if exception is not None:
            errors[request_id] = exception.status_code
        else:
            results[request_id] = base64.urlsafe_b64decode(response["raw"])

    batch = new_batch(gmail_server, callback=collect)
    for gid in raws:
        batch.add(gmail.users().messages().get(userId="me", id=gid, format="raw"), request_id=gid)
    batch.add(gmail.users().messages().get(userId="me", id="18c0000000000001"), request_id="gone")
    batch.execute()

    assert results == raws
    assert errors == {"gone": 404}


def test_a_batch_part_can_fail_alone(gmail_server):
    mailbox, refresh_token = gmail_server.add_user("bob@gmail.com")
    gmail = gmail_service(gmail_server, refresh_token)
    ids = [mailbox.add_message(make_mail(f"m{i}")).id for i in range(3)]
    outcome: dict[str, object] = {}
    batch = new_batch(
        gmail_server, callback=lambda rid, resp, exc: outcome.update({rid: exc or resp})
    )
    for gid in ids:
        batch.add(
            gmail.users().messages().get(userId="me", id=gid, format="minimal"), request_id=gid
        )
    gmail.users().getProfile(userId="me").execute()  # token before the batch
    gmail_server.rate_limit_next(1)

    batch.execute()

    failed = [rid for rid, value in outcome.items() if isinstance(value, HttpError)]
    assert failed == [ids[0]]
    assert outcome[ids[0]].status_code == 429
    assert all(outcome[gid]["id"] == gid for gid in ids[1:])


def test_a_batch_of_more_than_100_calls_is_refused(gmail_server):
    mailbox, refresh_token = gmail_server.add_user("bob@gmail.com")
    gmail = gmail_service(gmail_server, refresh_token)
    message = mailbox.add_message(make_mail("x"))
    batch = new_batch(gmail_server)
    for i in range(MAX_PARTS + 1):
        batch.add(gmail.users().messages().get(userId="me", id=message.id), request_id=str(i))

    with pytest.raises(HttpError) as caught:
        batch.execute()
    assert caught.value.status_code == 400


def test_the_per_user_quota_counts_each_call_of_a_batch(gmail_server):
    mailbox, refresh_token = gmail_server.add_user("bob@gmail.com")
    gmail = gmail_service(gmail_server, refresh_token)
    ids = [mailbox.add_message(make_mail(f"m{i}")).id for i in range(3)]
    gmail_server.quota.per_user_per_minute = 19
    outcome: dict[str, object] = {}

    gmail.users().messages().list(userId="me").execute()
    batch = new_batch(gmail_server, callback=lambda rid, resp, exc: outcome.update({rid: exc}))
    for gid in ids:
        batch.add(gmail.users().messages().get(userId="me", id=gid), request_id=gid)
    batch.execute()

    refused = [rid for rid, exc in outcome.items() if exc is not None]
    assert refused == [ids[2]]
    assert outcome[ids[2]].status_code == 403
    assert outcome[ids[2]].error_details[0]["reason"] == "userRateLimitExceeded"
    assert gmail_server.quota.used["bob@gmail.com"] == 15


def test_batch_parts_refused_for_an_expired_token_are_sent_again_after_a_refresh(gmail_server):
    mailbox, refresh_token = gmail_server.add_user("bob@gmail.com")
    gmail = gmail_service(gmail_server, refresh_token)
    ids = [mailbox.add_message(make_mail(f"m{i}")).id for i in range(2)]
    messages = gmail.users().messages()
    messages.list(userId="me").execute()
    outcome: dict[str, object] = {}

    gmail_server.tokens.expire_access_tokens()
    batch = new_batch(
        gmail_server, callback=lambda rid, resp, exc: outcome.update({rid: exc or resp})
    )
    for gid in ids:
        batch.add(messages.get(userId="me", id=gid, format="minimal"), request_id=gid)
    batch.execute()

    assert {rid: value["id"] for rid, value in outcome.items()} == {gid: gid for gid in ids}
    assert gmail_server.tokens.refreshes == 2


def test_another_users_mailbox_is_forbidden(gmail_server):
    gmail_server.add_user("eve@gmail.com")
    _, refresh_token = gmail_server.add_user("bob@gmail.com")
    gmail = gmail_service(gmail_server, refresh_token)

    with pytest.raises(HttpError) as caught:
        gmail.users().getProfile(userId="eve@gmail.com").execute()

    assert caught.value.status_code == 403
    assert gmail.users().getProfile(userId="bob@gmail.com").execute()["emailAddress"] == (
        "bob@gmail.com"
    )
