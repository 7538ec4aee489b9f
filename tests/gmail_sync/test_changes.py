"""A client's change to a Gmail message, through the API: applied on Gmail (the local Gmail
API), and the store set to Gmail's answer at once, with the changes feed."""

from __future__ import annotations

import pytest

from emailplatform import topics
from emailplatform.celery import app
from gmail_sync import change_tasks  # noqa: F401  (registers gmail_sync.apply_message_change)
from gmail_sync.changes import gmail_message_change
from messages.folders import folders_by_name
from messages.models import Account, Message
from tests.conftest import token_client
from tests.gmail_sync.factories import gmail_account_create
from tests.mailfactory import make_mail
from tests.messages.api.conftest import queued

from .conftest import GmailAccount, folder_names, store

pytestmark = pytest.mark.django_db(transaction=True)


def run_published() -> list:
    """Act as the gmail worker: run each task waiting on its queue, in this process."""
    return [app.tasks[name].apply(args=args).get() for name, args in queued(topics.QUEUE_GMAIL)]


def patch(gmail_account, message, body) -> list:
    response = gmail_account.api.patch(f"/api/messages/{message.pk}/", body, format="json")
    assert response.status_code == 202, response.content
    return run_published()


def feed(gmail_account, cursor: int) -> set[tuple[str, str, int]]:
    changes = gmail_account.api.get(f"/api/changes/?cursor={cursor}").json()["changes"]
    return {(c["type"], c["kind"], c["object_id"]) for c in changes}


def cursor_now(gmail_account) -> int:
    return gmail_account.api.get("/api/changes/?limit=1000").json()["cursor"]


@pytest.fixture
def hello(gmail_account):
    fake = gmail_account.box.add_message(make_mail("Hello", message_id="<hello@x>"))
    return fake, store(gmail_account.account, fake)


def test_read_and_star_reach_gmail_and_the_store_at_once(gmail_account, hello, gmail_queue):
    fake, message = hello
    assert not message.is_read and not message.is_flagged
    cursor = cursor_now(gmail_account)

    outcomes = patch(gmail_account, message, {"is_read": True, "is_flagged": True})

    assert outcomes[0]["applied"] == {"read": True, "flagged": True}
    assert set(fake.label_ids) == {"INBOX", "STARRED"}
    message.refresh_from_db()
    assert message.is_read and message.is_flagged
    assert folder_names(message) == ["INBOX", "STARRED"]
    assert ("message", "updated", message.pk) in feed(gmail_account, cursor)
    assert ("thread", "updated", message.thread_id) in feed(gmail_account, cursor)

    patch(gmail_account, message, {"is_read": False})
    assert "UNREAD" in fake.label_ids
    assert Message.objects.get(pk=message.pk).is_read is False


def test_labels_added_and_removed(gmail_account, hello, gmail_queue):
    fake, message = hello
    work = gmail_account.box.add_label("Work")
    folders_by_name(gmail_account.account, [work.id])

    patch(gmail_account, message, {"labels_add": [work.id]})
    assert work.id in fake.label_ids and "INBOX" in fake.label_ids
    assert folder_names(message) == ["INBOX", work.id]

    patch(gmail_account, message, {"labels_remove": ["INBOX"]})
    assert fake.label_ids == ["UNREAD", work.id]
    assert folder_names(message) == [work.id]


def test_move_to_a_label_takes_it_out_of_the_inbox(gmail_account, hello, gmail_queue):
    fake, message = hello
    patch(gmail_account, message, {"folder": "SPAM"})
    assert set(fake.label_ids) == {"UNREAD", "SPAM"}
    assert folder_names(message) == ["SPAM"]


def test_trash_and_untrash_round_trip(gmail_account, hello, gmail_queue):
    fake, message = hello
    cursor = cursor_now(gmail_account)

    patch(gmail_account, message, {"trash": True})
    assert set(fake.label_ids) == {"UNREAD", "TRASH"}
    assert folder_names(message) == ["TRASH"]
    detail = gmail_account.api.get(f"/api/messages/{message.pk}/").json()
    assert detail["folders"] == ["TRASH"]

    patch(gmail_account, message, {"trash": False})
    assert set(fake.label_ids) == {"UNREAD", "INBOX"}, "Gmail puts it back in the inbox"
    assert folder_names(message) == ["INBOX"]
    assert ("message", "updated", message.pk) in feed(gmail_account, cursor)


def test_trash_on_an_account_that_does_not_sync_the_trash(gmail_settings, user, gmail_queue):
    """The default account leaves SPAM and TRASH out: it has no Trash folder in the store, yet
    Gmail's trash is there; a trashed message leaves the store (in no synced folder) and the
    feed says so."""
    box, refresh_token = gmail_settings.add_user("carol@gmail.com")
    account = gmail_account_create(user, refresh_token, box.email)
    folders_by_name(account, ["INBOX"])
    fake = box.add_message(make_mail("Hello", message_id="<trash-me@x>"))
    message = store(account, fake)
    target = GmailAccount(account=account, box=box, api=token_client(user), server=gmail_settings)
    cursor = cursor_now(target)

    patch(target, message, {"trash": True})

    assert "TRASH" in fake.label_ids and "INBOX" not in fake.label_ids
    assert not Message.objects.filter(pk=message.pk).exists()
    assert ("message", "deleted", message.pk) in feed(target, cursor)


def test_moving_a_trashed_message_takes_it_out_of_the_trash(gmail_account, hello, gmail_queue):
    fake, message = hello
    work = gmail_account.box.add_label("Work")
    folders_by_name(gmail_account.account, [work.id])
    patch(gmail_account, message, {"trash": True})

    patch(gmail_account, message, {"folder": work.id})

    assert set(fake.label_ids) == {"UNREAD", work.id}
    assert folder_names(message) == [work.id]


def test_a_change_the_store_already_shows_changes_nothing(gmail_account, hello):
    fake, message = hello
    gmail_message_change(message.pk, {"read": True})
    cursor = cursor_now(gmail_account)
    gmail_message_change(message.pk, {"read": True})
    assert feed(gmail_account, cursor) == set()


def test_an_access_token_google_no_longer_accepts_is_refreshed_and_the_change_done(
    gmail_account, hello
):
    fake, message = hello
    gmail_message_change(message.pk, {"flagged": True})  # the process now holds an access token
    refreshes = gmail_account.server.tokens.refreshes
    gmail_account.server.unauthorized_next(1)

    gmail_message_change(message.pk, {"flagged": False})

    assert "STARRED" not in fake.label_ids
    assert not Message.objects.get(pk=message.pk).is_flagged
    assert gmail_account.server.tokens.refreshes == refreshes + 1


def test_a_message_gmail_no_longer_has_leaves_the_store(gmail_account, hello, gmail_queue):
    fake, message = hello
    gmail_account.box.delete(fake.id)
    cursor = cursor_now(gmail_account)

    assert patch(gmail_account, message, {"is_read": True}) == [{"deleted": message.pk}]

    assert not Message.objects.filter(pk=message.pk).exists()
    assert ("message", "deleted", message.pk) in feed(gmail_account, cursor)


def test_gmail_unavailable_past_the_clients_retries_is_retried_by_the_task(
    gmail_account, hello, gmail_queue, settings
):
    fake, message = hello
    settings.GMAIL_MAX_RETRIES = 1
    gmail_account.server.backend_error_next(2)  # the client's try and its one retry

    assert patch(gmail_account, message, {"is_flagged": True})[0]["applied"] == {"flagged": True}

    assert gmail_account.server.calls.count(f"POST messages/{fake.id}/modify") == 3
    assert "STARRED" in fake.label_ids
    assert Message.objects.get(pk=message.pk).is_flagged


def test_an_answer_slower_than_the_timeout_is_tried_again(gmail_account, hello, settings):
    fake, message = hello
    gmail_message_change(message.pk, {"flagged": True})  # the access token, once
    settings.GMAIL_TIMEOUT_SECONDS = 0.5
    gmail_account.server.slow_next(1, seconds=1.5)

    gmail_message_change(message.pk, {"read": True})

    assert gmail_account.server.calls.count(f"POST messages/{fake.id}/modify") == 3
    assert "UNREAD" not in fake.label_ids
    assert Message.objects.get(pk=message.pk).is_read


def test_a_revoked_authorization_parks_the_account(gmail_account, hello, gmail_queue):
    fake, message = hello
    gmail_account.server.tokens.revoke(gmail_account.account.get_credentials()["refresh_token"])

    outcome = patch(gmail_account, message, {"is_read": True})

    assert "connect the account again" in outcome[0]["error"]
    account = Account.objects.get(pk=gmail_account.account.pk)
    assert account.status == Account.Status.AUTH_ERROR
    assert "connect the account again" in account.last_error
    assert "UNREAD" in fake.label_ids


def test_an_unknown_label_is_refused(gmail_account, hello):
    fake, message = hello
    response = gmail_account.api.patch(
        f"/api/messages/{message.pk}/", {"labels_add": ["Label_404"]}, format="json"
    )
    assert response.status_code == 400
    assert "labels_add" in response.json()["error"]["fields"]
