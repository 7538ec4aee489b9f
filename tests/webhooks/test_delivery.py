"""Deliveries to a real HTTP(S) receiver in the test process: what arrives, signed, once, in
order; what never arrives (rolled back, not wanted); retries, backoff and giving up against a
receiver that answers 500, is slow, or is down."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from messages.account_status import account_mark_error
from messages.events import events_record
from messages.ingest import messages_upsert
from messages.models import ChangeEvent, SyncRun
from messages.services import sync_run_finish, sync_run_start
from tests.conftest import incoming
from tests.mailfactory import make_mail
from tests.worker import free_port
from webhooks.delivery import endpoint_deliver
from webhooks.models import WebhookDelivery, WebhookEndpoint
from webhooks.signing import verify

from .conftest import HOST, endpoint_for

pytestmark = pytest.mark.django_db


def ingest(account, subject="Lunch on Friday", uid=1):
    raw = make_mail(subject, message_id=f"<{uid}@x>", body="Shall we meet at noon?")
    return messages_upsert(account=account, items=[incoming(raw, folder="INBOX", uid=uid)])


def test_a_new_message_arrives_signed_with_its_metadata(user, account, receiver):
    endpoint, secret = endpoint_for(user, receiver.url)
    ingest(account)

    result = endpoint_deliver(endpoint.pk)

    events = receiver.events()
    assert result.delivered == len(events) > 0
    created = [e for e in events if e["type"] == "message.created"]
    assert len(created) == 1
    data = created[0]["data"]
    assert data["subject"] == "Lunch on Friday"
    assert data["from"] == {"name": "Bob Sender", "address": "bob@example.org"}
    assert data["folders"] == ["INBOX"]
    assert created[0]["account_id"] == account.pk
    # Same ids as the changes feed, in its order.
    feed = list(ChangeEvent.objects.filter(owner=user).order_by("id").values_list("id", flat=True))
    assert [e["id"] for e in events] == feed
    for request in receiver.received:
        assert verify(secret, request.body, request.headers["Webhook-Signature"])
        assert not verify(secret + "x", request.body, request.headers["Webhook-Signature"])
        assert request.headers["Webhook-Id"] == str(request.json["id"])
        assert request.headers["Content-Type"] == "application/json"
    delivered = WebhookDelivery.objects.filter(endpoint=endpoint)
    assert {d.status for d in delivered} == {"delivered"}
    assert all(d.response_status == 200 and d.latency_ms is not None for d in delivered)


def test_a_signature_is_refused_when_the_body_or_the_time_differ(user, account, receiver):
    endpoint, secret = endpoint_for(user, receiver.url)
    ingest(account)
    endpoint_deliver(endpoint.pk)
    request = receiver.received[0]
    header = request.headers["Webhook-Signature"]
    assert not verify(secret, request.body + b" ", header)
    t = int(header.split(",")[0].removeprefix("t="))
    assert abs(t - time.time()) < 60
    assert not verify(secret, request.body, header, now=t + 301)  # a replay, later


def test_only_the_wanted_event_types_arrive(user, account, receiver):
    endpoint, _ = endpoint_for(user, receiver.url, event_types=["message.created"])
    ingest(account, uid=1)
    ingest(account, subject="Second", uid=2)
    endpoint_deliver(endpoint.pk)
    assert [e["type"] for e in receiver.events()] == ["message.created", "message.created"]
    endpoint.refresh_from_db()
    assert endpoint.cursor == ChangeEvent.objects.filter(owner=user).latest("id").pk


def test_events_before_registration_are_not_sent(user, account, receiver):
    ingest(account, uid=1)
    endpoint, _ = endpoint_for(user, receiver.url)
    ingest(account, subject="After", uid=2)
    endpoint_deliver(endpoint.pk)
    subjects = [
        e["data"].get("subject") for e in receiver.events() if e["type"] == "message.created"
    ]
    assert subjects == ["After"]


def test_another_users_events_never_reach_the_endpoint(user, account, receiver, django_user_model):
    from messages.models import Account

    endpoint, _ = endpoint_for(user, receiver.url)
    bob = django_user_model.objects.create_user("bob", "bob@example.com", "pw-bob-123")
    bobs = Account.objects.create(owner=bob, provider="local", email_address="bob@example.com")
    ingest(bobs)
    endpoint_deliver(endpoint.pk)
    assert receiver.received == []


@pytest.mark.django_db(transaction=True)
def test_rolled_back_events_are_never_sent_and_a_late_commit_is_not_skipped(
    user, account, receiver
):
    endpoint, _ = endpoint_for(user, receiver.url)
    with pytest.raises(RuntimeError), transaction.atomic():
        events_record(account, "folder", "created", [101])
        raise RuntimeError("rolled back")

    # A transaction that records an event and commits only after a pass has run.
    recorded, release = threading.Event(), threading.Event()

    def slow_writer():
        try:
            with transaction.atomic():
                events_record(account, "folder", "created", [102])
                recorded.set()
                release.wait(10)
        finally:
            connection.close()

    writer = threading.Thread(target=slow_writer)
    writer.start()
    assert recorded.wait(10)
    endpoint_deliver(endpoint.pk)
    assert receiver.received == []  # not committed yet: not seen
    release.set()
    writer.join(10)
    with transaction.atomic():
        events_record(account, "folder", "created", [103])
    endpoint_deliver(endpoint.pk)

    ids = [e["data"]["id"] for e in receiver.events()]
    assert ids == [102, 103]


def test_account_status_and_finished_syncs_are_events(user, account, receiver):
    endpoint, _ = endpoint_for(user, receiver.url, event_types=["account.updated", "sync.finished"])
    account_mark_error(account, "Login refused", auth=True)
    run = sync_run_start(account=account, kind=SyncRun.Kind.FULL)
    sync_run_finish(run=run, error="server went away")
    endpoint_deliver(endpoint.pk)

    status, finished = receiver.events()
    assert status["type"] == "account.updated"
    assert status["data"]["status"] == "auth_error"
    assert status["data"]["last_error"] == "Login refused"
    assert finished["type"] == "sync.finished"
    assert finished["data"]["id"] == run.pk
    assert finished["data"]["status"] == "failed"
    assert finished["data"]["error"] == "server went away"


def test_a_500_is_retried_with_growing_backoff_then_delivered(
    user, account, receiver, fast_retries
):
    endpoint, _ = endpoint_for(user, receiver.url, event_types=["message.created"])
    receiver.statuses = [500, 500]
    ingest(account)

    endpoint_deliver(endpoint.pk)
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("retrying", 1, 500)
    first_wait = (delivery.next_attempt_at - delivery.last_attempt_at).total_seconds()
    assert 27 <= first_wait <= 33
    endpoint_deliver(endpoint.pk)  # not due yet: nothing sent
    assert len(receiver.received) == 1

    _make_due(delivery)
    endpoint_deliver(endpoint.pk)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("retrying", 2)
    second_wait = (delivery.next_attempt_at - delivery.last_attempt_at).total_seconds()
    assert 54 <= second_wait <= 66
    assert "HTTP 500" in delivery.error

    _make_due(delivery)
    endpoint_deliver(endpoint.pk)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("delivered", 3, 200)
    bodies = {r.body for r in receiver.received}
    assert len(bodies) == 1  # every attempt sends the same body


def test_a_down_endpoint_costs_one_attempt_per_pass(user, account, fast_retries):
    endpoint, _ = endpoint_for(user, f"http://{HOST}:{free_port()}/hook")
    ingest(account, uid=1)
    ingest(account, subject="Second", uid=2)

    result = endpoint_deliver(endpoint.pk)
    assert result.failed == 1 and result.delivered == 0
    attempted = WebhookDelivery.objects.filter(endpoint=endpoint, attempts__gt=0)
    assert attempted.count() == 1
    assert "connection failed" in attempted.get().error
    endpoint.refresh_from_db()
    assert endpoint.retry_at is not None and endpoint.failing_since is not None
    assert endpoint_deliver(endpoint.pk).failed == 0  # waits for its retry time


def test_a_slow_endpoint_times_out_and_is_retried(user, account, receiver, fast_retries):
    fast_retries.WEBHOOK_TIMEOUT_SECONDS = 0.5
    receiver.delay = 2.0
    endpoint, _ = endpoint_for(user, receiver.url, event_types=["message.created"])
    ingest(account)
    started = time.monotonic()
    endpoint_deliver(endpoint.pk)
    assert time.monotonic() - started < 1.9
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert delivery.status == "retrying"
    assert "timed out" in delivery.error


def test_a_day_of_failures_disables_the_endpoint_with_the_reason(user, account, receiver):
    endpoint, _ = endpoint_for(user, receiver.url, event_types=["message.created"])
    receiver.status = 500
    ingest(account)
    endpoint_deliver(endpoint.pk)
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        first_failed_at=timezone.now() - timedelta(hours=24, minutes=1),
        next_attempt_at=timezone.now(),
    )
    endpoint_deliver(endpoint.pk)

    endpoint.refresh_from_db()
    assert not endpoint.is_active
    assert "failing since" in endpoint.disabled_reason
    assert "HTTP 500" in endpoint.disabled_reason
    ingest(account, subject="While disabled", uid=2)
    sent = len(receiver.received)
    endpoint_deliver(endpoint.pk)
    assert len(receiver.received) == sent  # a disabled endpoint gets nothing


def _make_due(delivery: WebhookDelivery) -> None:
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    WebhookEndpoint.objects.filter(pk=delivery.endpoint_id).update(retry_at=None)


def test_a_bounce_reaches_the_endpoint_as_outbound_delivery_status(user, account, receiver):
    from messages.models import OutboundMessage, OutboundRecipient
    from messages.outbox_states import recipients_update

    outbound = OutboundMessage.objects.create(
        account=account,
        state=OutboundMessage.State.SENT,
        message_id_header="<out-1@example.com>",
        envelope_id="env-1",
        from_address="alice@example.com",
        subject="Offer",
    )
    OutboundRecipient.objects.create(outbound=outbound, kind="to", address="bob@example.org")
    endpoint, _ = endpoint_for(user, receiver.url, event_types=["outbound.updated"])
    recipients_update(outbound, {"bob@example.org": {"status": "bounced", "smtp_code": 550}})
    endpoint_deliver(endpoint.pk)

    [event] = receiver.events()
    assert event["type"] == "outbound.updated"
    assert event["data"]["state"] == "sent"
    assert event["data"]["message_id"] == "<out-1@example.com>"
    assert event["data"]["recipients"] == [
        {"kind": "to", "address": "bob@example.org", "status": "bounced", "smtp_code": 550}
    ]
