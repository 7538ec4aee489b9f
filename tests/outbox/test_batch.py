"""Composing many messages in one call (POST /api/outbound/batch/): every item checked like a
single compose, all stored and queued together or none; the feed and the provider's queue hear
of each; each message counts against the send rate."""

from __future__ import annotations

import email
import email.policy
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from messages.models import Account, OutboundMessage, OutboundRecipient

from .conftest import outbound_count, send_tasks, waiting

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_queues")]

URL = "/api/outbound/batch/"


def item(sender, i: int = 0, **data) -> dict:
    body = {
        "account": sender.pk,
        "to": [{"name": f"Reader {i}", "address": f"reader{i}@example.org"}],
        "subject": f"Letter {i}",
        "text": f"Dear reader {i}",
        "send": True,
    }
    body.update(data)
    return body


def batch(api, *items):
    return api.post(URL, {"messages": list(items)}, format="json")


def refused(response, status: int, code: str, field: str) -> dict:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code, error
    assert field in error["fields"], error
    assert outbound_count() == 0
    assert OutboundRecipient.objects.count() == 0
    assert send_tasks() == []
    return error


def test_a_batch_stores_and_queues_every_message_in_order(api, sender):
    cursor = api.get("/api/changes/?limit=1000").json()["cursor"]
    later = timezone.now() + timedelta(minutes=20)
    response = batch(
        api,
        item(sender, 0, cc=[{"address": "carol@example.net"}], bcc=[{"address": "h@example.net"}]),
        item(sender, 1, send=False),
        item(sender, 2, send_at=later.isoformat()),
        item(sender, 3, html="<p>Hi</p>"),
    )
    assert response.status_code == 201, response.content
    created = response.json()["messages"]
    assert [m["subject"] for m in created] == [f"Letter {i}" for i in range(4)]
    assert [m["state"] for m in created] == ["queued", "draft", "queued", "queued"]
    ids = [m["id"] for m in created]
    assert created[0]["bcc"] == [{"name": "", "address": "h@example.net"}]
    detail = api.get(f"/api/outbound/{ids[0]}/").json()
    assert [(r["kind"], r["address"], r["status"]) for r in detail["recipients"]] == [
        ("to", "reader0@example.org", "pending"),
        ("cc", "carol@example.net", "pending"),
        ("bcc", "h@example.net", "pending"),
    ]

    rows = {o.pk: o for o in OutboundMessage.objects.filter(pk__in=ids)}
    assert len({o.message_id_header for o in rows.values()}) == 4
    assert len({o.envelope_id for o in rows.values()}) == 4
    draft = rows[ids[1]]
    assert (draft.raw, draft.queued_at, draft.next_attempt_at) == (b"", None, None)
    for pk in (ids[0], ids[2], ids[3]):
        outbound = rows[pk]
        mail = email.message_from_bytes(bytes(outbound.raw), policy=email.policy.default)
        assert mail["Message-ID"] == outbound.message_id_header
        assert mail["Subject"] == outbound.subject
        assert "Bcc" not in mail
        assert outbound.size == len(outbound.raw) and outbound.queued_at is not None
    assert abs(rows[ids[2]].next_attempt_at - later) < timedelta(seconds=1)
    assert rows[ids[3]].next_attempt_at == rows[ids[3]].queued_at
    mail = email.message_from_bytes(bytes(rows[ids[3]].raw), policy=email.policy.default)
    assert mail.get_body(("html",)).get_content().strip() == "<p>Hi</p>"

    # The messages due now go in one send task (a burst); the scheduled one has its own ETA.
    tasks = [
        (t["args"][0], t["eta"]) for t in waiting("smtp") if t["task"] == "smtp_sync.send_outbound"
    ]
    assert [burst for burst, eta in tasks if eta is None] == [[ids[0], ids[3]]]
    [(scheduled, eta)] = [(one, eta) for one, eta in tasks if eta is not None]
    assert scheduled == ids[2] and abs(eta - later) < timedelta(seconds=1)

    changes = api.get(f"/api/changes/?cursor={cursor}").json()["changes"]
    assert sorted((c["kind"], c["object_id"]) for c in changes if c["type"] == "outbound") == (
        sorted([("created", pk) for pk in ids] + [("updated", pk) for pk in ids if pk != ids[1]])
    )
    assert all(c["account_id"] == sender.pk for c in changes)


def test_a_batch_answers_what_the_list_shows_of_each_message(api, sender):
    response = batch(api, item(sender, 0), item(sender, 1, send=False))
    answered = response.json()["messages"]
    listed = {m["id"]: m for m in api.get("/api/outbound/").json()["results"]}
    assert answered == [listed[m["id"]] for m in answered]
    single = api.post("/api/outbound/", item(sender, 0), format="json").json()
    same = {"account", "state", "subject", "from", "to", "cc", "bcc", "send_at", "attempts"}
    assert {k: single[k] for k in same} == {k: answered[0][k] for k in same}


def test_a_batch_replies_and_forwards_with_stored_attachments(api, sender, parent):
    response = batch(
        api,
        item(sender, 0, reply_to_message=parent.pk, subject=""),
        item(sender, 1, forward_of=parent.pk, subject=""),
        item(sender, 2, attachments=[parent.attachments.get().pk]),
    )
    assert response.status_code == 201, response.content
    reply, forward, attached = (
        api.get(f"/api/outbound/{m['id']}/").json() for m in response.json()["messages"]
    )
    assert reply["subject"] == "Re: Lunch on Friday"
    assert reply["in_reply_to"] == "<second@x>"
    assert reply["references"] == ["<first@x>", "<second@x>"]
    assert forward["subject"] == "Fwd: Lunch on Friday"
    for sent in (forward, attached):
        assert [a["filename"] for a in sent["attachments"]] == ["menu.pdf"]
        raw = bytes(OutboundMessage.objects.get(pk=sent["id"]).raw)
        mail = email.message_from_bytes(raw, policy=email.policy.default)
        [part] = list(mail.iter_attachments())
        assert (part.get_filename(), part.get_content()) == ("menu.pdf", b"%PDF-1.4 menu")
    assert send_tasks() == [[sorted([reply["id"], forward["id"], attached["id"]])]]


def test_one_bad_item_refuses_the_whole_batch_and_names_it(api, sender):
    error = refused(
        batch(api, item(sender, 0), item(sender, 1), item(sender, 2, to=[{"address": "bob@"}])),
        400,
        "invalid_address",
        "messages.2.to.0.address",
    )
    assert list(error["fields"]) == ["messages.2.to.0.address"]
    refused(
        batch(api, item(sender, 0), item(sender, 1, subject="Hi\r\nBcc: victim@example.net")),
        400,
        "header_injection",
        "messages.1.subject",
    )
    # What the input serializer refuses is named the same way.
    no_account = item(sender, 1)
    del no_account["account"]
    refused(batch(api, item(sender, 0), no_account), 400, "invalid", "messages.1.account")
    refused(
        batch(
            api, item(sender, 0), item(sender, 1, send=False, send_at=timezone.now().isoformat())
        ),
        400,
        "invalid",
        "messages.1.send_at",
    )
    # A check made while building (no recipients) too.
    refused(batch(api, item(sender, 0, to=[])), 400, "no_recipients", "messages.0.to")


def test_another_users_account_in_one_item_is_404_and_nothing_is_stored(
    api, sender, bob_sender, parent
):
    refused(
        batch(api, item(sender, 0), item(bob_sender, 1)),
        404,
        "not_found",
        "messages.1.account",
    )
    refused(
        batch(api, item(sender, 0, reply_to_message=parent.pk + 1000)),
        404,
        "not_found",
        "messages.0.reply_to_message",
    )


def test_another_users_message_cannot_be_forwarded_in_a_batch(bob_api, bob_sender, parent):
    response = batch(bob_api, item(bob_sender, 0), item(bob_sender, 1, forward_of=parent.pk))
    refused(response, 404, "not_found", "messages.1.forward_of")


def test_a_paused_account_refuses_the_batch_with_409(api, sender):
    paused = Account.objects.create(
        owner=sender.owner,
        provider=Account.Provider.IMAP,
        email_address="paused@example.com",
        status=Account.Status.PAUSED,
    )
    response = batch(api, item(sender, 0), item(paused, 1))
    refused(response, 409, "account_paused", "messages.1")
    # A draft from it is fine, as in a single compose.
    assert batch(api, item(sender, 0), item(paused, 1, send=False)).status_code == 201


@pytest.mark.parametrize(
    "body",
    [
        {"messages": []},
        {"messages": {"account": 1}},
        {"messages": "all of them"},
        {"messages": None},
        {},
        [],
    ],
)
def test_a_batch_that_is_no_list_of_messages_is_400(api, sender, body):
    response = api.post(URL, body, format="json")
    assert response.status_code == 400, response.content
    assert outbound_count() == 0


def test_over_the_maximum_is_400(api, sender, settings):
    settings.OUTBOX_BATCH_MAX = 3
    response = batch(api, *[item(sender, i) for i in range(4)])
    refused(response, 400, "invalid", "messages")
    assert "At most 3" in response.json()["error"]["fields"]["messages"][0]
    assert batch(api, *[item(sender, i) for i in range(3)]).status_code == 201


def test_the_send_throttle_counts_each_message_of_a_batch(api, sender, settings, monkeypatch):
    from messages.api.throttling import SendThrottle

    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
            "send": "5/minute",
        },
    }
    clock = [1_000_000.0]
    monkeypatch.setattr(SendThrottle, "timer", lambda self: clock[0])

    def at(seconds: float, count: int):
        clock[0] = 1_000_000.0 + seconds
        if count == 1:
            return api.post("/api/outbound/", item(sender), format="json")
        return batch(api, *[item(sender, i) for i in range(count)])

    assert at(0, 3).status_code == 201
    too_many = at(10, 3)
    assert too_many.status_code == 429, "3 + 3 > 5: the batch does not fit"
    assert too_many["Retry-After"] == "50", "until the first batch's 3 leave the window"
    assert at(11, 2).status_code == 201, "a refused batch counted nothing"
    assert at(12, 1).status_code == 429, "the single compose shares the budget"
    assert at(60.5, 3).status_code == 201
    assert at(61, 6).status_code == 429, "a batch above the rate never fits"
    assert outbound_count() == 8


def test_the_queries_of_a_batch_do_not_grow_with_its_size(api, sender, parent, settings):
    # The webhooks' map of active endpoints is re-read by time, once per process: not inside
    # the two batches compared.
    settings.WEBHOOK_ENDPOINT_CACHE_SECONDS = 3600

    def queries(count: int) -> int:
        items = [item(sender, i, reply_to_message=parent.pk) for i in range(count)]
        with CaptureQueriesContext(connection) as captured:
            assert batch(api, *items).status_code == 201
        return len(captured)

    queries(1)
    assert queries(1) == queries(30)


def test_the_batch_endpoint_is_in_the_schema(api):
    paths = api.get("/api/schema/?format=json").json()["paths"]
    operation = paths["/api/outbound/batch/"]["post"]
    assert "201" in operation["responses"] and "400" in operation["responses"]
