"""POST /gmail/push: Pub/Sub's OIDC token verified against the fake's certificates (cached),
and a valid notice turned into one incremental sync request on the gmail queue; everything
else refused or dropped with nothing enqueued."""

from __future__ import annotations

import base64
import json
import socket
import time

import pytest

from emailplatform import syncstate, topics
from gmail_sync.models import GmailSettings
from gmail_sync.push import marker_key
from gmail_sync.push_auth import forget_certs
from gmail_sync.watch import gmail_watch_start
from messages.models import Account
from tests.gmail_fake.oidc import TokenSigner
from tests.gmail_sync.push_helpers import (
    AUDIENCE,
    SERVICE_ACCOUNT,
    TOPIC,
    broker,
    clear_queue,
    gmail_account,
    queued_tasks,
)
from tests.mailfactory import make_mail

URL = "/gmail/push"
SYNC_TASK = "gmail_sync.incremental_sync"
pytestmark = pytest.mark.django_db


@pytest.fixture
def push_settings(settings, gmail_settings):
    settings.GMAIL_PUBSUB_TOPIC = TOPIC
    settings.GMAIL_PUSH_AUDIENCE = AUDIENCE
    settings.GMAIL_PUSH_SERVICE_ACCOUNT = SERVICE_ACCOUNT
    forget_certs()
    clear_queue()
    markers = [marker_key(a) for a in ("dave@gmail.com", "erin@gmail.com", "nobody@gmail.com")]
    broker().delete(*markers)
    yield gmail_settings
    forget_certs()
    clear_queue()
    broker().delete(*markers)


@pytest.fixture
def dave(user, push_settings):
    _, refresh_token = push_settings.add_user("dave@gmail.com")
    return gmail_account(user, "dave@gmail.com", refresh_token, history_id=100)


def token(gmail_server, **claims) -> str:
    return gmail_server.publisher.signer.token(AUDIENCE, SERVICE_ACCOUNT, **claims)


def notice(email: str, history_id, **message) -> str:
    data = json.dumps({"emailAddress": email, "historyId": history_id}).encode()
    body = {
        "message": {
            "data": base64.b64encode(data).decode(),
            "messageId": "2070443601311540",
            "publishTime": "2026-11-30T22:00:00.000Z",
            **message,
        },
        "subscription": "projects/test-project/subscriptions/gmail-push-1",
    }
    return json.dumps(body)


def push(client, body: str, authorization: str | None):
    headers = {"Authorization": authorization} if authorization is not None else {}
    return client.post(URL, data=body, content_type="application/json", headers=headers)


def syncs_requested() -> list[int]:
    return [args[0] for name, args in queued_tasks() if name == SYNC_TASK]


def test_a_valid_push_requests_one_incremental_sync_of_the_mailbox(
    client, dave, push_settings, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = push(client, notice("dave@gmail.com", 150), f"Bearer {token(push_settings)}")
    assert response.status_code == 204
    assert syncs_requested() == [dave.pk]


def test_duplicates_old_and_already_synced_history_ids_request_nothing_more(
    client,
    dave,
    push_settings,
    django_capture_on_commit_callbacks,
    django_assert_num_queries,
):
    bearer = f"Bearer {token(push_settings)}"
    with django_capture_on_commit_callbacks(execute=True):
        assert push(client, notice("dave@gmail.com", 150), bearer).status_code == 204
        with django_assert_num_queries(0):  # Pub/Sub's redelivery, an older change
            assert push(client, notice("dave@gmail.com", 150), bearer).status_code == 204
            assert push(client, notice("dave@gmail.com", 120), bearer).status_code == 204
        GmailSettings.objects.filter(account=dave).update(history_id=300)  # a sync ran
        with django_assert_num_queries(1):
            assert push(client, notice("dave@gmail.com", 250), bearer).status_code == 204
    assert syncs_requested() == [dave.pk]


def test_a_burst_of_pushes_makes_one_task_while_it_waits(
    client, dave, push_settings, django_capture_on_commit_callbacks, monkeypatch
):
    """Gmail pushes each change: 50 new history ids while the first task waits on the queue
    are one task (syncstate's coalescing, which the Gmail sync consumes)."""
    monkeypatch.setattr(topics, "SYNC_COALESCING_PROVIDERS", frozenset({"imap", "gmail"}))
    bearer = f"Bearer {token(push_settings)}"
    try:
        with django_capture_on_commit_callbacks(execute=True):
            for history_id in range(101, 151):
                assert push(client, notice("dave@gmail.com", history_id), bearer).status_code == 204
        assert syncs_requested() == [dave.pk]
        assert syncstate.INCREMENTAL in syncstate.wants(dave.pk)
    finally:
        syncstate.forget_account(dave.pk)


def test_unknown_addresses_and_accounts_not_active_get_nothing(
    client, user, dave, push_settings, django_capture_on_commit_callbacks
):
    bearer = f"Bearer {token(push_settings)}"
    with django_capture_on_commit_callbacks(execute=True):
        assert push(client, notice("nobody@gmail.com", 500), bearer).status_code == 204
        for history_id, status in enumerate(
            (Account.Status.PAUSED, Account.Status.AUTH_ERROR, Account.Status.DELETING), 200
        ):
            Account.objects.filter(pk=dave.pk).update(status=status)
            assert push(client, notice("dave@gmail.com", history_id), bearer).status_code == 204
    assert syncs_requested() == []


def test_two_owners_of_one_address_each_get_their_sync(
    client, user, dave, push_settings, django_user_model, django_capture_on_commit_callbacks
):
    bob = django_user_model.objects.create_user("bob", "bob@example.com", "pw-bob-12345")
    _, refresh_token = push_settings.add_user("erin@gmail.com")
    bobs = gmail_account(bob, "Dave@Gmail.com", refresh_token)  # as he typed it
    with django_capture_on_commit_callbacks(execute=True):
        response = push(client, notice("dave@gmail.com", 150), f"Bearer {token(push_settings)}")
    assert response.status_code == 204
    assert sorted(syncs_requested()) == sorted([dave.pk, bobs.pk])


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("not json", "not JSON"),
        ('{"subscription": "s"}', '"message"'),
        ('{"message": {"data": "%%%"}}', "base64"),
        ('{"message": {"data": "' + base64.b64encode(b'"text"').decode() + '"}}', "object"),
        (notice("dave@gmail.com", None), "historyId"),
        (notice("dave@gmail.com", "soon"), "historyId"),
        (notice("", 150), "emailAddress"),
    ],
)
def test_a_malformed_notice_with_a_valid_token_is_a_400_with_its_reason(
    client, dave, push_settings, body, reason, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = push(client, body, f"Bearer {token(push_settings)}")
    assert response.status_code == 400
    assert reason in response.json()["error"]["message"]
    assert syncs_requested() == []


def _forged(gmail_server, **claims) -> str:
    """Signed by another key that claims the fake's key id."""
    forger = TokenSigner(key_id=gmail_server.publisher.signer.key_id)
    return forger.token(AUDIENCE, SERVICE_ACCOUNT, **claims)


def _signed_as(gmail_server, service_account: str) -> str:
    return gmail_server.publisher.signer.token(AUDIENCE, service_account)


REFUSALS = {
    "missing": (lambda s: None, 401),
    "not bearer": (lambda s: "Basic ZGF2ZTpwdw==", 401),
    "empty bearer": (lambda s: "Bearer ", 401),
    "not a jwt": (lambda s: "Bearer abc.def", 401),
    "another key": (lambda s: "Bearer " + TokenSigner().token(AUDIENCE, SERVICE_ACCOUNT), 401),
    "forged key id": (lambda s: "Bearer " + _forged(s), 401),
    "expired": (lambda s: "Bearer " + token(s, exp=int(time.time()) - 120), 401),
    "not google's": (lambda s: "Bearer " + token(s, iss="https://issuer.example"), 401),
    "wrong audience": (lambda s: "Bearer " + token(s, aud="https://other.example/push"), 403),
    "other account": (lambda s: "Bearer " + _signed_as(s, "x@evil.iam.gserviceaccount.com"), 403),
    "email not verified": (lambda s: "Bearer " + token(s, email_verified=False), 403),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_push_without_the_subscriptions_token_is_refused_and_enqueues_nothing(
    client, dave, push_settings, case, django_capture_on_commit_callbacks
):
    authorization, status = REFUSALS[case]
    with django_capture_on_commit_callbacks(execute=True):
        response = push(client, notice("dave@gmail.com", 150), authorization(push_settings))
    assert response.status_code == status
    assert response.json()["error"]["code"] == "push_refused"
    assert syncs_requested() == []


def test_an_endpoint_without_an_audience_refuses_every_push(
    client, dave, push_settings, settings, django_capture_on_commit_callbacks
):
    settings.GMAIL_PUSH_AUDIENCE = ""
    with django_capture_on_commit_callbacks(execute=True):
        response = push(client, notice("dave@gmail.com", 150), f"Bearer {token(push_settings)}")
    assert response.status_code == 403
    assert syncs_requested() == []


def test_google_certificates_are_fetched_once_for_many_pushes(
    client, dave, push_settings, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        for history_id in range(101, 121):
            bearer = f"Bearer {token(push_settings)}"
            assert push(client, notice("dave@gmail.com", history_id), bearer).status_code == 204
    assert push_settings.certs_fetches == 1


def test_certificates_are_fetched_again_after_their_max_age(
    client, dave, push_settings, django_capture_on_commit_callbacks
):
    push_settings.certs_max_age = 1
    bearer = f"Bearer {token(push_settings)}"
    with django_capture_on_commit_callbacks(execute=True):
        assert push(client, notice("dave@gmail.com", 101), bearer).status_code == 204
        assert push(client, notice("dave@gmail.com", 102), bearer).status_code == 204
        assert push_settings.certs_fetches == 1
        time.sleep(1.1)
        assert push(client, notice("dave@gmail.com", 103), bearer).status_code == 204
    assert push_settings.certs_fetches == 2


def test_a_rotated_key_is_fetched_at_once_and_unknown_key_ids_do_not_hammer_google(
    client, dave, push_settings, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        assert push(client, notice("dave@gmail.com", 101), f"Bearer {token(push_settings)}")
        push_settings.rotate_oidc_key()
        rotated = f"Bearer {token(push_settings)}"
        assert push(client, notice("dave@gmail.com", 102), rotated).status_code == 204
        assert push_settings.certs_fetches == 2
        for _ in range(5):
            forged = "Bearer " + TokenSigner().token(AUDIENCE, SERVICE_ACCOUNT)
            assert push(client, notice("dave@gmail.com", 103), forged).status_code == 401
    assert push_settings.certs_fetches == 2


@pytest.mark.django_db(transaction=True)
def test_a_change_in_the_mailbox_is_pushed_through_pubsub_and_requests_a_sync(
    live_server, user, push_settings, settings
):
    """End to end over HTTP: the fake's Pub/Sub pushes the watched mailbox's change, with its
    OIDC token, to the platform's endpoint on a live server."""
    endpoint = f"{live_server.url}{URL}"
    settings.GMAIL_PUSH_AUDIENCE = endpoint
    mailbox, refresh_token = push_settings.add_user("dave@gmail.com")
    account = gmail_account(user, "dave@gmail.com", refresh_token, history_id=1)
    clear_queue()  # the connect's own watch task
    push_settings.subscribe(TOPIC, endpoint, audience=endpoint)
    assert gmail_watch_start(account) == "watching"

    mailbox.add_message(make_mail("hello"), ["INBOX"])

    deadline = time.monotonic() + 10
    while not push_settings.publisher.deliveries and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [d.status for d in push_settings.publisher.deliveries] == [204]
    assert syncs_requested() == [account.pk]


def test_pushes_wait_while_google_certificates_cannot_be_fetched(
    client, dave, push_settings, settings, django_capture_on_commit_callbacks
):
    """503: Pub/Sub keeps the notice and pushes it again later."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    settings.GMAIL_OIDC_CERTS_URL = f"http://127.0.0.1:{port}/oauth2/v1/certs"
    with django_capture_on_commit_callbacks(execute=True):
        response = push(client, notice("dave@gmail.com", 150), f"Bearer {token(push_settings)}")
    assert response.status_code == 503
    assert syncs_requested() == []
