"""Accounts: create, list, detail with sync progress, change settings, sync now, delete."""

import pytest
from django.core.files.storage import default_storage

from emailplatform import topics
from messages.models import Account, Attachment, ChangeEvent, Message, SyncRun, Thread
from messages.tasks import delete_account
from tests.mailfactory import make_mail

from .conftest import ingest, queued

pytestmark = pytest.mark.django_db


def test_create_a_local_account(api, user):
    response = api.post(
        "/api/accounts/",
        {
            "provider": "local",
            "email_address": "archive@example.com",
            "display_name": "Old mail",
            "sync_settings": {"include_attachments": False},
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    account = Account.objects.get(pk=body["id"])
    assert account.owner == user
    assert body["provider"] == "local"
    assert body["email_address"] == "archive@example.com"
    assert body["display_name"] == "Old mail"
    assert body["status"] == "active"
    assert body["sync_settings"] == {"include_attachments": False}
    assert account.sync_settings == {"includeAttachments": False}  # the topic contract's keys
    assert body["sync_progress"] is None
    assert ChangeEvent.objects.filter(object_type="account", object_id=account.pk).exists()


def test_create_validates_and_names_the_fields(api):
    response = api.post(
        "/api/accounts/",
        {"provider": "imap", "email_address": "not-an-address", "settings": {"imap_port": 0}},
        format="json",
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert set(error["fields"]) >= {"email_address", "settings.imap_host", "settings.imap_port"}
    assert "email_address" in error["message"]
    assert Account.objects.count() == 0


def test_create_needs_a_known_provider(api):
    response = api.post(
        "/api/accounts/",
        {"provider": "carrier-pigeon", "email_address": "a@example.com"},
        format="json",
    )
    assert response.status_code == 400
    assert "provider" in response.json()["error"]["fields"]


def test_imap_account_needs_a_password_or_a_token(api):
    response = api.post(
        "/api/accounts/",
        {
            "provider": "imap",
            "email_address": "a@example.com",
            "settings": {"imap_host": "localhost"},
        },
        format="json",
    )
    assert response.status_code == 400
    assert "password" in response.json()["error"]["fields"]


def test_duplicate_account_is_a_field_error(api, account):
    response = api.post(
        "/api/accounts/",
        {"provider": "local", "email_address": account.email_address},
        format="json",
    )
    assert response.status_code == 400
    assert "email_address" in response.json()["error"]["fields"]


def test_list_and_detail_show_status_error_and_progress(api, account):
    account.last_error = "login refused by imap.example.com: [AUTHENTICATIONFAILED]"
    account.save()
    SyncRun.objects.create(account=account, kind="full", status="succeeded", progress_done=9)
    SyncRun.objects.create(account=account, kind="full", progress_done=40, progress_total=100)
    listed = api.get("/api/accounts/").json()
    assert [a["id"] for a in listed["results"]] == [account.pk]
    detail = api.get(f"/api/accounts/{account.pk}/").json()
    assert detail == listed["results"][0]
    assert detail["last_error"].startswith("login refused")
    assert detail["sync_progress"] == {"kind": "full", "done": 40, "total": 100}


def test_patch_settings_merges_sync_settings(api, account):
    account.sync_settings = {"includeAttachments": True, "windowDays": 30}
    account.save()
    response = api.patch(
        f"/api/accounts/{account.pk}/",
        {"display_name": "Work", "sync_settings": {"skip_folders": ["Spam"], "backfill": True}},
        format="json",
    )
    assert response.status_code == 200, response.content
    account.refresh_from_db()
    assert account.display_name == "Work"
    assert account.sync_settings == {
        "includeAttachments": True,
        "windowDays": 30,
        "skipFolders": ["Spam"],
        "backfill": True,
    }
    assert response.json()["sync_settings"] == {
        "include_attachments": True,
        "window_days": 30,
        "skip_folders": ["Spam"],
        "backfill": True,
    }


def test_patch_rejects_bad_sync_settings(api, account):
    response = api.patch(
        f"/api/accounts/{account.pk}/",
        {"sync_settings": {"window_days": 0, "skip_folders": "Spam"}},
        format="json",
    )
    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == {
        "sync_settings.window_days",
        "sync_settings.skip_folders",
    }


def test_local_accounts_take_no_password(api, account):
    response = api.patch(f"/api/accounts/{account.pk}/", {"password": "x"}, format="json")
    assert response.status_code == 400
    assert "password" in response.json()["error"]["fields"]


def test_sync_of_a_local_account_is_a_conflict(api, account):
    response = api.post(f"/api/accounts/{account.pk}/sync/", {"full": True}, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "sync_unavailable"


def test_sync_now_publishes_full_and_incremental_syncs(
    api, user, empty_queues, django_capture_on_commit_callbacks
):
    account = Account.objects.create(
        owner=user,
        provider="imap",
        email_address="imap@example.com",
        sync_settings={"includeAttachments": False},
    )
    with django_capture_on_commit_callbacks(execute=True):
        full = api.post(f"/api/accounts/{account.pk}/sync/", {"full": True}, format="json")
        incremental = api.post(f"/api/accounts/{account.pk}/sync/", {}, format="json")
    assert full.status_code == incremental.status_code == 202
    assert full.json() == {"queued": True, "full": True}
    assert incremental.json() == {"queued": True, "full": False}
    # No per-run options: the sync reads the account's own settings (includeAttachments false).
    [(name, [payload])] = queued(topics.QUEUE_FULL_SYNC)
    assert name == "smtp_sync.full_sync"
    assert payload == {
        "accountId": account.pk,
        "provider": "imap",
        "options": {},
        "trigger": payload["trigger"],  # the request's token (emailplatform.syncstate)
        "continuation": False,
    }
    [(name, args)] = queued(topics.QUEUE_SMTP)
    assert name == "smtp_sync.incremental_sync" and args[0] == account.pk


def test_fifty_sync_requests_queue_one_task_per_kind(
    api, user, empty_queues, django_capture_on_commit_callbacks
):
    account = Account.objects.create(owner=user, provider="imap", email_address="i@example.com")
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(50):
            full = api.post(f"/api/accounts/{account.pk}/sync/", {"full": True}, format="json")
            assert full.status_code == 202
        for _ in range(50):
            api.post(f"/api/accounts/{account.pk}/sync/", {}, format="json")
    assert len(queued(topics.QUEUE_FULL_SYNC)) == 1
    assert len(queued(topics.QUEUE_SMTP)) == 1


def test_delete_marks_the_account_and_deletes_it_in_the_background(
    api, account, empty_queues, django_capture_on_commit_callbacks
):
    raw = make_mail("With file", attachments=[("a.bin", "application/octet-stream", b"data")])
    message = ingest(account, raw, uid=1)
    attachment = Attachment.objects.get(message=message)
    assert default_storage.exists(attachment.file.name)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.delete(f"/api/accounts/{account.pk}/")
    assert response.status_code == 202
    assert response.json() == {"id": account.pk, "status": "deleting"}
    assert api.get(f"/api/accounts/{account.pk}/").json()["status"] == "deleting"
    assert api.get("/api/messages/").json()["results"] == []
    tasks = queued(topics.QUEUE_DEFAULT)
    assert tasks == [(topics.TASK_DELETE_ACCOUNT, [account.pk])]
    assert topics.TASK_ROUTES[topics.TASK_DELETE_ACCOUNT] == {"queue": topics.QUEUE_DEFAULT}

    with django_capture_on_commit_callbacks(execute=True):
        outcome = delete_account.apply(args=[account.pk]).get()
    assert outcome == {"accountId": account.pk, "done": True}
    assert not Account.objects.filter(pk=account.pk).exists()
    assert not Message.objects.exists() and not Thread.objects.exists()
    assert not default_storage.exists(attachment.file.name)
    last = ChangeEvent.objects.order_by("id").last()
    assert (last.object_type, last.kind, last.object_id) == ("account", "deleted", account.pk)
    assert api.get(f"/api/accounts/{account.pk}/").status_code == 404
    assert api.get("/api/changes/").json()["changes"][-1]["kind"] == "deleted"


def test_deletion_keeps_files_other_messages_use(user, account):
    other = Account.objects.create(owner=user, provider="local", email_address="o@example.com")
    raw = make_mail("Shared", attachments=[("a.bin", "application/octet-stream", b"same")])
    ingest(account, raw, uid=1)
    ingest(other, raw, uid=1)
    name = Attachment.objects.first().file.name
    Account.objects.filter(pk=account.pk).update(status="deleting")
    delete_account.apply(args=[account.pk]).get()
    assert default_storage.exists(name)


def test_the_deletion_task_leaves_accounts_not_marked_alone(account):
    delete_account.apply(args=[account.pk]).get()
    assert Account.objects.filter(pk=account.pk).exists()


def test_a_big_account_is_deleted_in_bounded_chunks(
    account, monkeypatch, empty_queues, django_capture_on_commit_callbacks
):
    for i in range(3):
        ingest(account, make_mail(f"m{i}", message_id=f"<m{i}@x>"), uid=i + 1)
    Account.objects.filter(pk=account.pk).update(status="deleting")
    monkeypatch.setattr("messages.services.ACCOUNT_DELETE_BATCH", 1)
    monkeypatch.setattr("messages.tasks.DELETE_CHUNK_SECONDS", 1e-9)
    with django_capture_on_commit_callbacks(execute=True):
        outcome = delete_account.apply(args=[account.pk]).get()
    assert outcome == {"accountId": account.pk, "done": False}
    assert Message.objects.filter(account=account).count() == 2
    assert queued(topics.QUEUE_DEFAULT) == [(topics.TASK_DELETE_ACCOUNT, [account.pk])]
    monkeypatch.setattr("messages.tasks.DELETE_CHUNK_SECONDS", 60)
    assert delete_account.apply(args=[account.pk]).get()["done"] is True
    assert not Account.objects.filter(pk=account.pk).exists()


def test_a_deleting_account_cannot_be_changed_or_synced(api, account):
    Account.objects.filter(pk=account.pk).update(status="deleting")
    patch = api.patch(f"/api/accounts/{account.pk}/", {"display_name": "x"}, format="json")
    assert patch.status_code == 409
    assert patch.json()["error"]["code"] == "account_deleting"
    sync = api.post(f"/api/accounts/{account.pk}/sync/", {"full": True}, format="json")
    assert sync.json()["error"]["code"] == "account_deleting"


@pytest.mark.parametrize(
    ("status", "code"), [("paused", "account_paused"), ("auth_error", "auth_failed")]
)
def test_sync_waits_for_a_usable_account(api, user, status, code):
    account = Account.objects.create(
        owner=user, provider="imap", email_address="i@example.com", status=status
    )
    response = api.post(f"/api/accounts/{account.pk}/sync/", {}, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == code


def test_wrong_json_types_are_refused_field_by_field(api, account):
    response = api.patch(
        f"/api/accounts/{account.pk}/",
        {"display_name": 5, "sync_settings": {"include_attachments": "yes", "window_days": "30"}},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "display_name": ["Must be a string."],
        "sync_settings.include_attachments": ["Must be true or false."],
        "sync_settings.window_days": ["Must be an integer."],
    }
