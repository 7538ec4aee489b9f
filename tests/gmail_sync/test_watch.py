"""users.watch and users.stop against the fake: a connected account is watched, beat renews
watches that end soon, a paused or removed account's watch is stopped, and Gmail's refusals
show on the account."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from gmail_sync.client import GmailUnavailable
from gmail_sync.models import GmailSettings, WatchScope
from gmail_sync.watch import gmail_watch_start, watches_due
from gmail_sync.watch_tasks import renew_watches, watch_account
from messages.models import Account
from messages.services import account_delete, account_delete_request
from tests.gmail_sync.push_helpers import (
    TOPIC,
    clear_queue,
    gmail_account,
    queued_tasks,
    run_queued,
)

pytestmark = pytest.mark.django_db
SEVEN_DAYS = 7 * 24 * 3600


@pytest.fixture
def watch_settings(settings, gmail_settings):
    settings.GMAIL_PUBSUB_TOPIC = TOPIC
    clear_queue()
    yield gmail_settings
    clear_queue()


def connect(owner, gmail_server, email: str, **gmail_fields) -> tuple[Account, object]:
    mailbox, refresh_token = gmail_server.add_user(email)
    return gmail_account(owner, email, refresh_token, **gmail_fields), mailbox


def expiration_of(account: Account):
    return GmailSettings.objects.get(account=account).watch_expiration


def days_left(account: Account) -> float:
    return (expiration_of(account) - timezone.now()).total_seconds() / 86400


def test_connecting_an_account_watches_its_inbox(
    user, watch_settings, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        account, mailbox = connect(user, watch_settings, "dave@gmail.com")
    assert queued_tasks() == [("gmail_sync.watch_account", [account.pk])]

    run_queued()

    assert mailbox.watch.topic_name == TOPIC
    assert mailbox.watch.label_ids == ["INBOX"]
    assert 6.99 < days_left(account) <= 7
    assert abs(expiration_of(account).timestamp() * 1000 - mailbox.watch.expiration) < 1


def test_an_account_watching_every_label_gets_pushes_for_sent_mail_too(user, watch_settings):
    account, mailbox = connect(user, watch_settings, "dave@gmail.com", watch_scope=WatchScope.ALL)
    assert gmail_watch_start(account) == "watching"
    assert mailbox.watch.label_ids == []
    assert mailbox.watch.wants({"SENT"})


def test_without_a_topic_nothing_is_watched(user, watch_settings, settings):
    settings.GMAIL_PUBSUB_TOPIC = ""
    account, mailbox = connect(user, watch_settings, "dave@gmail.com")
    assert gmail_watch_start(account) == "not_configured"
    assert mailbox.watch is None and expiration_of(account) is None
    assert watches_due().start == []


def test_beat_renews_the_watches_that_end_within_two_days_and_only_those(user, watch_settings):
    now = timezone.now()
    ending, ending_box = connect(user, watch_settings, "a@gmail.com")
    later, later_box = connect(user, watch_settings, "b@gmail.com")
    never, never_box = connect(user, watch_settings, "c@gmail.com")
    GmailSettings.objects.filter(account=ending).update(watch_expiration=now + timedelta(days=1))
    GmailSettings.objects.filter(account=later).update(watch_expiration=now + timedelta(days=5))
    clear_queue()

    assert renew_watches() == {"watch": 2, "stop": 0}
    ran = run_queued()

    assert sorted(args[0] for _, args in ran) == sorted([ending.pk, never.pk])
    assert 6.99 < days_left(ending) <= 7 and 6.99 < days_left(never) <= 7
    assert ending_box.watch is not None and never_box.watch is not None
    assert later_box.watch is None  # not called: its watch runs 5 more days
    assert 4.99 < days_left(later) <= 5
    assert renew_watches() == {"watch": 0, "stop": 0}


def test_the_renewal_is_seeded_for_beat_daily_on_the_gmail_queue():
    task = PeriodicTask.objects.get(task="gmail_sync.renew_watches")
    assert task.enabled and task.queue == "gmail"
    assert (task.interval.every, task.interval.period) == (1, "days")


def test_pausing_in_the_admin_stops_the_watch_and_resuming_watches_again(
    admin_client, user, watch_settings, django_capture_on_commit_callbacks
):
    account, mailbox = connect(user, watch_settings, "dave@gmail.com")
    gmail_watch_start(account)
    url = "/admin/mailstore/account/"

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(url, {"action": "pause", "_selected_action": [account.pk]})
    assert queued_tasks() == [("gmail_sync.stop_watch", [account.pk])]
    run_queued()
    assert mailbox.watch is None and expiration_of(account) is None

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(url, {"action": "resume", "_selected_action": [account.pk]})
    run_queued()
    assert mailbox.watch is not None and 6.99 < days_left(account) <= 7


def test_a_reconnected_account_is_watched_again_and_a_fresh_watch_is_left_alone(
    user, watch_settings, django_capture_on_commit_callbacks
):
    account, mailbox = connect(user, watch_settings, "dave@gmail.com")
    watch_settings.tokens.revoke(account.get_credentials()["refresh_token"])
    gmail_watch_start(account)
    account.refresh_from_db()
    assert account.status == Account.Status.AUTH_ERROR
    clear_queue()

    account.set_credentials({"refresh_token": watch_settings.tokens.grant("dave@gmail.com")})
    account.status = Account.Status.ACTIVE
    with django_capture_on_commit_callbacks(execute=True):
        account.save(update_fields=["credentials_encrypted", "status"])
    run_queued()
    assert mailbox.watch is not None and 6.99 < days_left(account) <= 7

    with django_capture_on_commit_callbacks(execute=True):
        account.save(update_fields=["status"])  # active again: nothing to renew
    run_queued()
    assert watch_settings.calls.count("POST watch") == 1


def test_a_paused_account_still_watched_is_stopped_by_the_renewal(user, watch_settings):
    """A pause its stop task missed (a queryset update elsewhere, a lost task)."""
    account, mailbox = connect(user, watch_settings, "dave@gmail.com")
    gmail_watch_start(account)
    Account.objects.filter(pk=account.pk).update(status=Account.Status.PAUSED)
    clear_queue()

    assert renew_watches() == {"watch": 0, "stop": 1}
    run_queued()
    assert mailbox.watch is None and expiration_of(account) is None


def test_a_deletion_request_stops_the_watch(
    user, watch_settings, django_capture_on_commit_callbacks
):
    account, mailbox = connect(user, watch_settings, "dave@gmail.com")
    gmail_watch_start(account)
    clear_queue()
    with django_capture_on_commit_callbacks(execute=True):
        account_delete_request(account=account)
    assert ("gmail_sync.stop_watch", [account.pk]) in queued_tasks()
    run_queued()
    assert mailbox.watch is None


def test_an_account_deleted_before_its_stop_ran_is_stopped_with_the_deletion(
    user, watch_settings, django_capture_on_commit_callbacks
):
    account, mailbox = connect(user, watch_settings, "dave@gmail.com")
    gmail_watch_start(account)
    Account.objects.filter(pk=account.pk).update(status=Account.Status.DELETING)
    with django_capture_on_commit_callbacks(execute=True):
        assert account_delete(account_id=account.pk)
    assert not Account.objects.filter(pk=account.pk).exists()
    assert mailbox.watch is None
    assert watch_settings.calls.count("POST stop") == 1


def test_a_revoked_grant_shows_on_the_account(user, watch_settings):
    account, mailbox = connect(user, watch_settings, "dave@gmail.com")
    watch_settings.tokens.revoke(account.get_credentials()["refresh_token"])

    assert gmail_watch_start(account) == "refused"

    account.refresh_from_db()
    assert account.status == Account.Status.AUTH_ERROR
    assert "connect the account again" in account.last_error
    assert mailbox.watch is None and expiration_of(account) is None


def test_a_watch_gmail_refuses_shows_on_the_account_which_stays_active(
    user, watch_settings, settings
):
    settings.GMAIL_PUBSUB_TOPIC = "gmail-push"  # not projects/*/topics/*: Gmail answers 400
    account, mailbox = connect(user, watch_settings, "dave@gmail.com")

    assert gmail_watch_start(account) == "refused"

    account.refresh_from_db()
    assert account.status == Account.Status.ACTIVE
    assert account.last_error.startswith("Gmail refused to push changes")
    assert mailbox.watch is None


def test_a_topic_gmail_may_not_publish_to_leaves_the_account_syncing_with_the_reason(
    user, watch_settings
):
    """Google answers 403 "Error sending test message to Cloud PubSub ...": the operator's
    topic lacks the Publisher role, the user's grant is fine; parking the account would stop
    its sync for a problem its owner cannot fix."""
    account, mailbox = connect(user, watch_settings, "dave@gmail.com")
    watch_settings.publisher.deny(TOPIC)

    assert gmail_watch_start(account) == "refused"

    account.refresh_from_db()
    assert account.status == Account.Status.ACTIVE
    assert "gmail-api-push@system.gserviceaccount.com" in account.last_error
    assert TOPIC in account.last_error
    assert mailbox.watch is None
    assert watches_due().start == [account.pk]  # tomorrow's renewal tries again


def test_gmail_unavailable_is_retried_by_the_task_then_by_the_next_renewal(
    user, watch_settings, settings
):
    settings.GMAIL_MAX_RETRIES = 1
    account, mailbox = connect(user, watch_settings, "dave@gmail.com")
    watch_settings.backend_error_next(2)  # the client's two attempts fail; the task's retry works

    watch_account.apply(args=[account.pk])

    assert mailbox.watch is not None and 6.99 < days_left(account) <= 7
    assert watch_settings.calls.count("POST watch") == 3
    account.refresh_from_db()
    assert account.status == Account.Status.ACTIVE and account.last_error == ""

    mailbox.watch = None
    GmailSettings.objects.filter(account=account).update(watch_expiration=None)
    watch_settings.backend_error_next(100)
    with pytest.raises(GmailUnavailable):
        gmail_watch_start(account)
    assert watches_due().start == [account.pk]  # tomorrow's renewal tries again
