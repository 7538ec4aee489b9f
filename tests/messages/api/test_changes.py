"""The changes feed: the user's events after a cursor, in id (commit) order, with long polling."""

import threading
import time

import pytest
from django.db import connection, transaction

from messages.events import events_record
from messages.models import Account

from .conftest import token_client


def record(account, kind="updated", object_type="message", ids=(1,)):
    with transaction.atomic():
        events_record(account, object_type, kind, ids)


@pytest.mark.django_db
def test_feed_in_order_with_cursor(api, account):
    record(account, "created", "message", [11, 12])
    record(account, "updated", "thread", [5])
    first = api.get("/api/changes/?limit=2").json()
    assert [(c["type"], c["kind"], c["object_id"]) for c in first["changes"]] == [
        ("message", "created", 11),
        ("message", "created", 12),
    ]
    assert first["has_more"] is True
    assert first["cursor"] == first["changes"][-1]["id"]
    assert set(first["changes"][0]) == {"id", "type", "kind", "object_id", "account_id", "at"}
    assert first["changes"][0]["account_id"] == account.pk

    rest = api.get(f"/api/changes/?cursor={first['cursor']}").json()
    assert [(c["type"], c["object_id"]) for c in rest["changes"]] == [("thread", 5)]
    assert rest["has_more"] is False
    ids = [c["id"] for c in first["changes"] + rest["changes"]]
    assert ids == sorted(ids)

    empty = api.get(f"/api/changes/?cursor={rest['cursor']}").json()
    assert empty == {"changes": [], "cursor": rest["cursor"], "has_more": False}
    beginning = api.get("/api/changes/?cursor=0").json()["changes"]
    assert [c["id"] for c in beginning] == ids


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query", ["cursor=abc", "cursor=-1", "cursor=1.5", "limit=0", "limit=1001", "wait=31", "wait=x"]
)
def test_malformed_parameters_are_400(api, query):
    response = api.get(f"/api/changes/?{query}")
    assert response.status_code == 400
    assert query.split("=")[0] in response.json()["error"]["fields"]


@pytest.mark.django_db
def test_api_writes_appear_in_the_feed(api, mailbox):
    cursor = api.get("/api/changes/?limit=1000").json()["cursor"]
    api.patch(f"/api/messages/{mailbox.hello.pk}/", {"is_read": True}, format="json")
    api.patch(f"/api/accounts/{mailbox.account.pk}/", {"display_name": "Home"}, format="json")
    changes = api.get(f"/api/changes/?cursor={cursor}").json()["changes"]
    assert [(c["type"], c["kind"], c["object_id"]) for c in changes] == [
        ("message", "updated", mailbox.hello.pk),
        ("thread", "updated", mailbox.hello.thread_id),
        ("account", "updated", mailbox.account.pk),
    ]


@pytest.mark.django_db(transaction=True)
def test_long_poll_returns_as_soon_as_an_event_arrives(user):
    account = Account.objects.create(owner=user, provider="local", email_address="a@example.com")
    client = token_client(user)
    cursor = client.get("/api/changes/").json()["cursor"]

    def later():
        time.sleep(1)
        try:
            record(account, "created", "message", [77])
        finally:
            connection.close()

    writer = threading.Thread(target=later)
    started = time.monotonic()
    writer.start()
    response = client.get(f"/api/changes/?cursor={cursor}&wait=20")
    elapsed = time.monotonic() - started
    writer.join()
    assert [c["object_id"] for c in response.json()["changes"]] == [77]
    assert 0.9 <= elapsed < 5, elapsed


@pytest.mark.django_db(transaction=True)
def test_long_poll_gives_up_after_wait_with_the_same_cursor(user):
    client = token_client(user)
    started = time.monotonic()
    response = client.get("/api/changes/?cursor=999999&wait=1")
    assert 1 <= time.monotonic() - started < 4
    assert response.json() == {"changes": [], "cursor": 999999, "has_more": False}
