"""Gmail history sync against the local Gmail API: adds, deletions and label changes reach
the store; a cursor Gmail forgot means a full sync; the cost grows with the changes."""

from __future__ import annotations

import pytest

from gmail_sync import sync as sync_module
from gmail_sync.client import forget_access_token
from gmail_sync.models import GmailSettings
from gmail_sync.services import gmail_sync_account
from gmail_sync.tasks import incremental_sync
from messages.models import Account, Message, SyncRun
from tests.gmail_sync.factories import assert_store_matches_gmail
from tests.mailfactory import make_mail

pytestmark = pytest.mark.django_db(transaction=True)


def history(gmail_user):
    return gmail_sync_account(gmail_user.account.pk)


@pytest.fixture
def synced(gmail_user):
    """A mailbox of 12 messages, fully synced."""
    box = gmail_user.box
    sent = [
        box.add_message(make_mail(f"m{i}", message_id=f"<m{i}@x>", minutes=i), ["INBOX", "UNREAD"])
        for i in range(12)
    ]
    report = gmail_sync_account(gmail_user.account.pk, full=True)
    assert report.done and Message.objects.filter(account=gmail_user.account).count() == 12
    return sent


def test_adds_deletes_and_label_changes_reach_the_store(gmail_user, synced):
    box = gmail_user.box
    work = box.add_label("Work")
    new = box.add_message(make_mail("new", message_id="<new@x>"), ["INBOX", "UNREAD"])
    box.add_message(
        make_mail("Re: m0", message_id="<re@x>", in_reply_to="<m0@x>"), ["SENT", "INBOX"]
    )
    box.delete(synced[0].id)
    box.modify(synced[1].id, add=["STARRED"], remove=["UNREAD"])
    box.modify(synced[2].id, add=[work.id], remove=["INBOX"])
    box.modify(synced[3].id, add=["SPAM"], remove=["INBOX"])  # leaves the synced mail
    box.modify(new.id, add=["IMPORTANT"])  # added and changed: one fetch, current labels

    report = history(gmail_user)

    assert report.done and not report.full and report.new == 2
    assert_store_matches_gmail(gmail_user.account, box)
    assert GmailSettings.objects.get(account=gmail_user.account).history_id == box.history_id
    run = SyncRun.objects.filter(account=gmail_user.account).latest("pk")
    assert run.kind == SyncRun.Kind.INCREMENTAL and run.status == SyncRun.Status.SUCCEEDED
    again = history(gmail_user)  # nothing new: nothing changes
    assert (again.new, again.label_changes, again.deleted) == (0, 0, 0)


def test_a_stale_history_id_means_a_full_sync_without_duplicates(gmail_user, synced):
    box = gmail_user.box
    ids_before = dict(Message.objects.values_list("provider_id", "id"))
    box.delete(synced[4].id)
    box.modify(synced[5].id, remove=["UNREAD"])
    box.add_message(make_mail("later", message_id="<later@x>"), ["INBOX"])
    box.expire_history()

    report = history(gmail_user)

    assert report.done and report.full and report.new == 1 and report.deleted == 1
    assert SyncRun.objects.filter(account=gmail_user.account).latest("pk").deleted == 1
    assert_store_matches_gmail(gmail_user.account, box)
    for provider_id, pk in Message.objects.values_list("provider_id", "id"):
        assert ids_before.get(provider_id, pk) == pk  # the same rows, no duplicates
    assert GmailSettings.objects.get(account=gmail_user.account).history_id == box.history_id


@pytest.mark.parametrize("changes", [8, 32])
def test_a_history_sync_costs_requests_in_proportion_to_the_changes(gmail_user, synced, changes):
    box = gmail_user.box
    for i in range(changes // 4):
        box.add_message(make_mail(f"n{i}", message_id=f"<n{i}@x>"), ["INBOX"])
    more = [box.add_message(make_mail(f"x{i}", message_id=f"<x{i}@x>"), []) for i in range(8)]
    gmail_sync_account(gmail_user.account.pk)  # the extra messages are stored
    gmail_user.server.calls.clear()
    targets = [m.id for m in [*synced, *more]][: changes // 2]
    for gid in targets[: changes // 4]:
        box.modify(gid, add=["STARRED"])
    for gid in targets[changes // 4 :]:
        box.delete(gid)
    for i in range(changes // 4):
        box.add_message(make_mail(f"y{i}", message_id=f"<y{i}@x>"), ["INBOX"])

    history(gmail_user)

    assert_store_matches_gmail(gmail_user.account, box)
    calls = gmail_user.server.calls
    assert [c for c in calls if c.startswith("GET history")] == ["GET history"]
    assert not [c for c in calls if c == "GET messages"]  # no listing
    # One get per added or relabelled message (deleted ones cost nothing), one history page.
    gets = [c for c in calls if c.startswith("GET messages/")]
    assert len(gets) == changes // 4 + changes // 4
    assert len(calls) == len(gets) + 1


def test_a_revoked_grant_parks_the_account_without_retries(gmail_user, synced):
    gmail_user.server.tokens.revoke(gmail_user.refresh_token)
    forget_access_token(gmail_user.refresh_token, gmail_user.server.client_id)

    result = incremental_sync.apply(args=[gmail_user.account.pk]).get()

    assert result == {"error": "auth_error"}
    account = Account.objects.get(pk=gmail_user.account.pk)
    assert account.status == Account.Status.AUTH_ERROR
    assert "connect the account again" in account.last_error
    calls = len(gmail_user.server.calls)
    assert incremental_sync.apply(args=[account.pk]).get() == {"nothing to do": True}
    assert len(gmail_user.server.calls) == calls  # parked: Gmail is not asked again


def test_a_deleted_account_is_nothing_to_do(db):
    assert incremental_sync.apply(args=[987654]).get() == {"error": "account does not exist"}


def test_gmail_unavailable_is_retried_by_the_task(gmail_user, synced, settings):
    settings.GMAIL_MAX_RETRIES = 1
    gmail_user.box.add_message(make_mail("new", message_id="<new@x>"), ["INBOX"])
    gmail_user.server.backend_error_next(2)  # the first try, and the client's own retry

    result = incremental_sync.apply(args=[gmail_user.account.pk]).get()

    assert result["done"] and "1 new messages" in result["summary"]
    assert_store_matches_gmail(gmail_user.account, gmail_user.box)
    account = Account.objects.get(pk=gmail_user.account.pk)
    assert account.status == Account.Status.ACTIVE and account.last_error == ""
    failed = SyncRun.objects.filter(account=account, status=SyncRun.Status.FAILED)
    assert "500" in failed.get().error


def test_a_history_sync_is_not_cut_into_chunks_nor_turned_into_a_full_sync(gmail_user, synced):
    for i in range(7):
        gmail_user.box.add_message(make_mail(f"b{i}", message_id=f"<b{i}@x>"), ["INBOX"])

    report = gmail_sync_account(gmail_user.account.pk, max_messages=2)

    assert report.done and not report.full and report.new == 7
    assert_store_matches_gmail(gmail_user.account, gmail_user.box)


def test_a_history_naming_more_than_a_full_sync_costs_is_a_full_sync(
    gmail_user, synced, monkeypatch
):
    monkeypatch.setattr(sync_module, "HISTORY_FULL_SYNC_THRESHOLD", 3)
    for message in synced[:5]:
        gmail_user.box.modify(message.id, remove=["UNREAD"])
    gmail_user.box.delete(synced[6].id)
    gmail_user.server.calls.clear()

    report = history(gmail_user)

    assert report.done and report.full and report.label_changes == 5 and report.deleted == 1
    assert_store_matches_gmail(gmail_user.account, gmail_user.box)
    # Listed, not fetched one by one: the full sync's reconcile reads labels from id lists.
    assert not [c for c in gmail_user.server.calls if c.startswith("GET messages/")]
