"""The pipeline's rules (messages.batch_store): batches consumed out of order, twice, late, or by
two workers at once leave the store as the provider is."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from emailplatform import topics
from messages import mailbox
from messages.batch_store import batch_store
from messages.batches import BatchPublisher, batches_void
from messages.models import Folder, IngestBatch, Message, MessageLocation, SyncRun
from messages.services import message_change
from tests.mailfactory import make_mail

pytestmark = pytest.mark.django_db


@pytest.fixture
def inbox(account):
    return Folder.objects.create(account=account, name="INBOX", display_name="INBOX", uidvalidity=7)


@pytest.fixture
def queue_emptied_after():
    """Tests that publish with no consumer leave nothing on this xdist worker's queue."""
    yield
    import redis
    from django.conf import settings

    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete(topics.QUEUE_NEW_MESSAGE)


def published(account, folder, mails, *, flags=(), fetched_at=None, run=None):
    """A batch as a producer publishes it: its row, and its payload. MAILS: {uid: raw}."""
    fetched_at = fetched_at or timezone.now()
    row = IngestBatch.objects.create(
        account=account,
        sync_run=run,
        folder=folder,
        uidvalidity=folder.uidvalidity,
        uids=sorted(mails),
        publisher="test",
        fetched_at=fetched_at,
    )
    items = [
        topics.new_message_item(raw, folder=folder.name, uid=uid, flags=list(flags))
        for uid, raw in mails.items()
    ]
    return topics.new_message_payload(account.pk, "imap", items, run.pk if run else None, row.pk)


def uids_in(folder):
    return set(MessageLocation.objects.filter(folder=folder).values_list("uid", flat=True))


def test_a_redelivered_batch_changes_nothing(account, inbox):
    run = SyncRun.objects.create(account=account, kind=SyncRun.Kind.FULL)
    payload = published(account, inbox, {1: make_mail("a"), 2: make_mail("b")}, run=run)
    first = batch_store(payload)
    again = batch_store(payload)
    assert first["created"] == 2
    assert "skipped" in again
    assert Message.objects.filter(account=account).count() == 2
    run.refresh_from_db()
    assert (run.created, run.progress_done) == (2, 2)  # counted once


def test_batches_consumed_in_reverse_order_store_both(account, inbox):
    older = published(account, inbox, {1: make_mail("one"), 2: make_mail("two")})
    newer = published(account, inbox, {3: make_mail("three")})
    batch_store(newer)
    batch_store(older)
    batch_store(newer)
    assert uids_in(inbox) == {1, 2, 3}
    assert Message.objects.filter(account=account).count() == 3


def test_an_expunge_seen_before_its_batch_is_consumed_is_not_undone(account, inbox):
    payload = published(account, inbox, {5: make_mail("gone"), 6: make_mail("kept")})
    mailbox.locations_remove(inbox, [5])  # a later sync saw UID 5 expunged
    batch_store(payload)
    batch_store(payload)
    assert uids_in(inbox) == {6}
    assert not Message.objects.filter(subject="gone").exists()


def test_an_expunge_after_the_batch_is_stored_removes_it(account, inbox):
    payload = published(account, inbox, {5: make_mail("gone")})
    batch_store(payload)
    mailbox.locations_remove(inbox, [5])
    batch_store(payload)  # a redelivery after the expunge
    assert uids_in(inbox) == set()
    assert mailbox.orphans_delete(account) == 1
    assert not Message.objects.filter(account=account).exists()


def test_a_uidvalidity_change_voids_the_batches_fetched_before_it(account, inbox):
    payload = published(account, inbox, {1: make_mail("old numbering")})
    mailbox.folder_reset(inbox, uidvalidity=8)
    assert "skipped" in batch_store(payload)
    assert uids_in(inbox) == set()


def test_a_batch_of_a_folder_since_deleted_stores_nothing(account, inbox):
    payload = published(account, inbox, {1: make_mail("in a deleted folder")})
    mailbox.folders_remove_missing(account, present=[])
    assert "skipped" in batch_store(payload)
    assert not Folder.objects.filter(account=account).exists()
    assert not Message.objects.filter(account=account).exists()


def test_an_older_batch_never_sets_newer_flags_back(account, inbox):
    raw = make_mail("flags", message_id="<flags@x>")
    archive = Folder.objects.create(account=account, name="Archive", display_name="Archive")
    now = timezone.now()
    newer = published(account, inbox, {1: raw}, flags=["\\Seen"], fetched_at=now)
    older = published(account, archive, {9: raw}, flags=[], fetched_at=now - timedelta(seconds=30))
    batch_store(newer)
    batch_store(older)
    message = Message.objects.get(account=account)
    assert message.is_read  # the copy fetched earlier said unread: too old to count
    assert uids_in(archive) == {9}  # its location is still news


def test_a_batch_fetched_before_a_clients_change_does_not_undo_it(account, inbox):
    first = published(account, inbox, {1: make_mail("read me", message_id="<c@x>")})
    batch_store(first)
    message = Message.objects.get(account=account)
    message_change(message=message, is_read=True)
    stale = published(
        account,
        inbox,
        {1: make_mail("read me", message_id="<c@x>")},
        flags=[],
        fetched_at=timezone.now() - timedelta(seconds=5),
    )
    batch_store(stale)
    assert Message.objects.get(pk=message.pk).is_read


def test_a_newer_batch_does_update_flags(account, inbox):
    raw = make_mail("flags", message_id="<new@x>")
    batch_store(published(account, inbox, {1: raw}, flags=[]))
    batch_store(published(account, inbox, {1: raw}, flags=["\\Flagged"]))
    assert Message.objects.get(account=account).is_flagged


def test_the_next_pass_voids_the_batches_of_a_dead_one(account, inbox):
    payload = published(account, inbox, {1: make_mail("of a dead pass")})
    assert batches_void(account.pk) == 1
    assert "skipped" in batch_store(payload)
    assert not Message.objects.filter(account=account).exists()


def test_a_malformed_batch_is_dead_lettered_once_and_its_uids_reported(account, inbox):
    payload = published(account, inbox, {3: make_mail("x")})
    payload["messages"][0]["uid"] = "three"
    outcome = batch_store(payload)
    row = IngestBatch.objects.get(pk=payload["batchId"])
    assert outcome["deadLetter"]
    assert row.stored_at is not None and row.dead_letter_uids == [3]
    assert "skipped" in batch_store(payload)


@pytest.mark.django_db(transaction=True)
def test_two_workers_storing_one_accounts_batches_at_once_make_no_duplicates(account, inbox):
    """Overlapping batches (the same messages under two rows, as after a re-publish) written by
    two threads at once: every message once, no deadlock."""
    mails = {uid: make_mail(f"m{uid}", message_id=f"<m{uid}@x>") for uid in range(1, 41)}
    payloads = [published(account, inbox, mails), published(account, inbox, mails)]
    payloads += [published(account, inbox, {uid: mails[uid]}) for uid in (5, 17, 33)]
    errors: list[BaseException] = []

    def work(chunk):
        try:
            for payload in chunk:
                batch_store(payload)
        except BaseException as exc:  # noqa: BLE001  (reported by the assertion below)
            errors.append(exc)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=work, args=(payloads[0::2],)),
        threading.Thread(target=work, args=(payloads[1::2],)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "deadlocked"
    assert errors == []
    assert Message.objects.filter(account=account).count() == 40
    assert uids_in(inbox) == set(mails)
    assert not IngestBatch.objects.filter(stored_at__isnull=True).exists()


@pytest.mark.usefixtures("queue_emptied_after")
def test_the_publisher_never_has_more_than_its_bound_in_flight(account, inbox, settings):
    """No consumer runs: the third batch waits (here, until the test stops it)."""
    settings.INGEST_QUEUE_TIMEOUT_SECONDS = 3600
    waits = []

    def on_wait():
        waits.append(len(publisher.in_flight))
        if len(waits) >= 2:
            raise TimeoutError("still waiting, as it should")

    publisher = BatchPublisher(account.pk, "imap", on_wait=on_wait, inline=False, max_in_flight=2)
    for uid in (1, 2):
        item = topics.new_message_item(make_mail(f"u{uid}"), folder="INBOX", uid=uid)
        publisher.publish([item], fetched_at=timezone.now(), folder=inbox, uids=[uid])
    with pytest.raises(TimeoutError):
        item = topics.new_message_item(make_mail("u3"), folder="INBOX", uid=3)
        publisher.publish([item], fetched_at=timezone.now(), folder=inbox, uids=[3])
    assert waits == [2, 2]
    assert IngestBatch.objects.filter(account=account).count() == 2


@pytest.mark.usefixtures("queue_emptied_after")
def test_a_batch_whose_consumer_died_is_reported_lost(account, inbox, settings):
    """Claimed, but its lease is gone (the worker was killed): the producer fetches it again,
    and the row goes so that the killed worker's redelivered copy changes nothing."""
    publisher = BatchPublisher(account.pk, "imap", inline=False)
    item = topics.new_message_item(make_mail("lost"), folder="INBOX", uid=4)
    publisher.publish([item], fetched_at=timezone.now(), folder=inbox, uids=[4])
    IngestBatch.objects.update(claimed_at=timezone.now() - timedelta(seconds=60))
    outcome = publisher.drain()
    assert outcome.lost == {inbox.pk: {4}}
    assert not IngestBatch.objects.exists()


@pytest.mark.usefixtures("queue_emptied_after")
def test_an_unclaimed_batch_is_lost_when_redis_lost_its_data(account, inbox, settings):
    from emailplatform import syncstate
    from messages.batches import EPOCH_KEY

    settings.INGEST_QUEUE_TIMEOUT_SECONDS = 3600
    publisher = BatchPublisher(account.pk, "imap", inline=False)
    item = topics.new_message_item(make_mail("queued"), folder="INBOX", uid=8)
    publisher.publish([item], fetched_at=timezone.now(), folder=inbox, uids=[8])
    syncstate.client().delete(EPOCH_KEY)  # what a restart without persistence does
    assert publisher.drain().lost == {inbox.pk: {8}}


@pytest.mark.usefixtures("queue_emptied_after")
def test_a_batch_voided_by_another_pass_is_never_counted_stored(account, inbox):
    """Two passes at once (the first lost its lock unnoticed): the second voids the first's
    batches; the first must fetch them again rather than move its cursor past them."""
    publisher = BatchPublisher(account.pk, "imap", inline=False)
    item = topics.new_message_item(make_mail("voided"), folder="INBOX", uid=11)
    publisher.publish([item], fetched_at=timezone.now(), folder=inbox, uids=[11])
    batches_void(account.pk)
    assert publisher.drain().lost == {inbox.pk: {11}}


def queued_payloads() -> list:
    """Take every EmailNewMessage task off its Redis list, oldest first, as workers do."""
    import base64
    import json

    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    payloads = []
    while (message := client.rpop(topics.QUEUE_NEW_MESSAGE)) is not None:
        envelope = json.loads(message)
        body = envelope["body"]
        if envelope["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, _kwargs, _embed = json.loads(body)
        payloads.append(args[0])
    return payloads


@pytest.mark.usefixtures("queue_emptied_after")
def test_a_batch_taken_by_a_worker_that_died_before_claiming_it_is_reported_lost(
    account, inbox, settings
):
    """A message worker killed between taking a batch off the queue and claiming it leaves no
    lease to lapse, and Redis gives the batch back only after its visibility timeout (hours):
    once a batch published after it was claimed, the producer fetches it again."""
    settings.INGEST_QUEUE_TIMEOUT_SECONDS = 3600
    waits = []

    def on_wait():
        waits.append(1)
        if len(waits) > 15:
            raise TimeoutError("the producer is still waiting for the batch the dead worker took")

    publisher = BatchPublisher(account.pk, "imap", inline=False, on_wait=on_wait)
    for uid in (1, 2):
        item = topics.new_message_item(make_mail(f"q{uid}"), folder="INBOX", uid=uid)
        publisher.publish([item], fetched_at=timezone.now(), folder=inbox, uids=[uid])
    _taken_by_the_dead_worker, second = queued_payloads()
    batch_store(second)
    IngestBatch.objects.filter(stored_at__isnull=False).update(
        claimed_at=timezone.now() - timedelta(seconds=10)
    )
    outcome = publisher.drain()
    assert outcome.lost == {inbox.pk: {1}}
    assert uids_in(inbox) == {2}
    assert not IngestBatch.objects.exists()


@pytest.mark.usefixtures("queue_emptied_after")
def test_a_small_batch_is_stored_by_its_producer_and_only_once(
    account, inbox, settings, monkeypatch
):
    """Queue delivery, no consumer running: a batch within INGEST_INLINE_MAX_* is stored before
    `publish` returns, nothing goes on the queue, and a copy of it delivered later (a retry, a
    stale redelivery) changes nothing."""
    import messages.batches

    settings.INGEST_DELIVERY = "queue"
    stored = []
    monkeypatch.setattr(
        messages.batches,
        "batch_store",
        lambda payload, **kw: stored.append(payload) or batch_store(payload, **kw),
    )
    publisher = BatchPublisher(account.pk, "imap")
    item = topics.new_message_item(make_mail("small"), folder="INBOX", uid=5, flags=["\\Seen"])
    publisher.publish([item], fetched_at=timezone.now(), folder=inbox, uids=[5])

    assert uids_in(inbox) == {5}
    assert queued_payloads() == []
    assert publisher.drain().lost == {}
    assert not IngestBatch.objects.exists()
    assert [p["batchId"] for p in stored] and "skipped" in batch_store(stored[0])
    assert Message.objects.filter(account=account).count() == 1


@pytest.mark.usefixtures("queue_emptied_after")
def test_batches_over_the_inline_bounds_go_on_the_queue(account, inbox, settings):
    settings.INGEST_DELIVERY = "queue"
    settings.INGEST_QUEUE_TIMEOUT_SECONDS = 3600
    settings.INGEST_INLINE_MAX_MESSAGES = 2
    settings.INGEST_INLINE_MAX_BYTES = 5000
    publisher = BatchPublisher(account.pk, "imap")
    three = [topics.new_message_item(make_mail(f"n{u}"), folder="INBOX", uid=u) for u in (1, 2, 3)]
    publisher.publish(three, fetched_at=timezone.now(), folder=inbox, uids=[1, 2, 3])
    big = make_mail("big", body="x" * 6000)
    one_big = [topics.new_message_item(big, folder="INBOX", uid=4)]
    publisher.publish(one_big, fetched_at=timezone.now(), folder=inbox, uids=[4])

    assert uids_in(inbox) == set()
    payloads = queued_payloads()
    assert [len(p["messages"]) for p in payloads] == [3, 1]
    for payload in payloads:
        batch_store(payload)
    assert publisher.drain().lost == {}
    assert uids_in(inbox) == {1, 2, 3, 4}


def test_a_small_batch_stored_inline_never_sets_older_flags(account, inbox, settings):
    """Rule 3 holds for a batch its producer stores: flags read before the user's change do not
    overwrite it."""
    settings.INGEST_DELIVERY = "queue"
    batch_store(published(account, inbox, {1: make_mail("a", message_id="<inline@x>")}))
    message = Message.objects.get(account=account)
    fetched_before_the_change = timezone.now()
    message_change(message=message, is_read=True)

    publisher = BatchPublisher(account.pk, "imap")
    raw = make_mail("a", message_id="<inline@x>")
    item = topics.new_message_item(raw, folder="INBOX", uid=1, flags=[])
    publisher.publish([item], fetched_at=fetched_before_the_change, folder=inbox, uids=[1])

    message.refresh_from_db()
    assert message.is_read
    assert publisher.drain().lost == {}


# Batches keyed by provider ids (Gmail: no UIDs) -----------------------------------------


def published_by_ids(account, mails, *, labels=("INBOX",)):
    """A batch as the Gmail sync publishes it. MAILS: {provider id: raw}."""
    row = IngestBatch.objects.create(
        account=account,
        provider_ids=sorted(mails),
        publisher="test",
        fetched_at=timezone.now(),
    )
    items = [
        topics.new_message_item(raw, provider_id=pid, labels=list(labels))
        for pid, raw in mails.items()
    ]
    return topics.new_message_payload(account.pk, "gmail", items, None, row.pk)


def test_a_deletion_seen_before_a_gmail_batch_is_consumed_is_not_undone(account):
    payload = published_by_ids(account, {"gm:1": make_mail("gone"), "gm:2": make_mail("kept")})
    assert mailbox.messages_remove(account, ["gm:1"]) == 0  # a history sync saw it deleted
    batch_store(payload)
    batch_store(payload)
    assert set(Message.objects.values_list("provider_id", flat=True)) == {"gm:2"}


def test_a_deletion_after_the_gmail_batch_is_stored_removes_it(account):
    payload = published_by_ids(account, {"gm:1": make_mail("gone")})
    batch_store(payload)
    assert mailbox.messages_remove(account, ["gm:1"]) == 1
    batch_store(payload)  # a redelivery after the deletion
    assert not Message.objects.filter(account=account).exists()
    assert not Folder.objects.get(name="INBOX").locations.exists()


def test_the_next_pass_voids_a_dead_gmail_producers_batches_not_imports(account):
    gmail = published_by_ids(account, {"gm:1": make_mail("of a dead pass")})
    imported = IngestBatch.objects.create(
        account=account, publisher="import", fetched_at=timezone.now()
    )
    assert batches_void(account.pk) == 1
    assert "skipped" in batch_store(gmail)
    assert IngestBatch.objects.filter(pk=imported.pk).exists()


def test_a_lost_gmail_batch_reports_its_provider_ids(account, settings, queue_emptied_after):
    settings.INGEST_QUEUE_TIMEOUT_SECONDS = 0
    publisher = BatchPublisher(account.pk, "gmail", inline=False)
    items = [topics.new_message_item(make_mail("m"), provider_id="gm:7", labels=["INBOX"])]
    publisher.publish(items, fetched_at=timezone.now(), provider_ids=["gm:7"])
    outcome = publisher.drain()  # nobody consumed it within the (zero) timeout
    assert outcome.lost_provider_ids == {"gm:7"} and outcome.lost_batches == 1
