"""The admin's operations overview: its numbers, its chart, and who sees what."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from emailplatform import syncstate, topics
from emailplatform.celery import app
from emailplatform.observability import queues
from messages.ingest import messages_upsert
from messages.models import Account, DeadLetter, Message, SyncRun
from tests.conftest import incoming
from tests.mailfactory import make_mail

pytestmark = pytest.mark.django_db

URL = "/admin/overview/"


@pytest.fixture
def root(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")


@pytest.fixture
def operator(django_user_model):
    """Staff, not superuser, allowed to view accounts: sees their own accounts only."""
    user = django_user_model.objects.create_user("bob", "bob@example.com", "pw-bob-123456")
    user.is_staff = True
    user.save()
    user.user_permissions.add(Permission.objects.get(codename="view_account"))
    return user


def new_account(owner, address: str, status: str = Account.Status.ACTIVE, **fields) -> Account:
    return Account.objects.create(
        owner=owner, provider="local", email_address=address, status=status, **fields
    )


def store(account: Account, count: int, prefix: str) -> None:
    mails = [make_mail(f"{prefix}{i}", message_id=f"<{prefix}{i}@x>") for i in range(count)]
    messages_upsert(account=account, items=[incoming(m, folder="INBOX") for m in mails])


@pytest.fixture
def platform(root, operator):
    """Root's accounts and the operator's, with syncs, failures and mail of each."""
    mine = new_account(operator, "bob@example.com")
    new_account(operator, "bob-broken@example.com", Account.Status.AUTH_ERROR, last_error="bad pw")
    theirs = new_account(root, "root@example.com")
    new_account(root, "root-paused@example.com", Account.Status.PAUSED)
    new_account(
        root, "root-broken@example.com", Account.Status.ERROR, last_error="root server gone"
    )
    SyncRun.objects.create(account=mine, kind="full", progress_done=40, progress_total=100)
    SyncRun.objects.create(account=theirs, kind="incremental", progress_done=7)
    SyncRun.objects.create(
        account=theirs,
        kind="full",
        status="failed",
        finished_at=timezone.now(),
        error="root run exploded",
    )
    store(mine, 2, "bob")
    store(theirs, 5, "root")
    DeadLetter.objects.create(task_name="t", account_id=theirs.pk, reason="bad payload")
    return mine, theirs


def page(client, user) -> str:
    client.force_login(user)
    response = client.get(URL)
    assert response.status_code == 200
    return response.content.decode()


def status_count(body: str, status: str) -> int:
    return int(re.search(rf'data-status="{status}">(\d+)<', body).group(1))


def current_hour_bar(body: str) -> str:
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    label = f"{hour:%H}:00-{(hour.hour + 1) % 24:02d}:00 UTC"
    return re.search(rf"<title>{label}: ([^<]*)</title>", body).group(1)


def test_superuser_sees_every_account(client, root, platform):
    body = page(client, root)
    assert "Accounts by status (5)" in body
    assert status_count(body, "active") == 2
    assert status_count(body, "paused") == 1
    assert status_count(body, "error") == 1
    assert status_count(body, "auth_error") == 1
    assert "Syncs running now (2)" in body
    assert '<progress max="100" value="40">' in body and "7 so far" in body
    assert "root run exploded" in body and "root server gone" in body and "bad pw" in body
    assert "1 dead letter" in body
    assert current_hour_bar(body) == "7 messages"
    assert body.count("<rect ") == 24
    assert "Your own accounts only" not in body


def test_other_staff_see_their_own_accounts_only(client, operator, platform):
    body = page(client, operator)
    assert "Your own accounts only" in body
    assert "Accounts by status (2)" in body
    assert status_count(body, "active") == 1
    assert status_count(body, "auth_error") == 1
    assert status_count(body, "paused") == 0
    assert "Syncs running now (1)" in body
    assert "bob@example.com" in body and "bad pw" in body
    for secret in ("root@example.com", "root run exploded", "root server gone", "7 so far"):
        assert secret not in body
    assert "0 dead letters" in body
    assert current_hour_bar(body) == "2 messages"


def test_older_mail_lands_in_its_hour_and_older_than_a_day_is_left_out(client, root, platform):
    mine, _ = platform
    two_hours_ago = timezone.now() - timedelta(hours=2)
    Message.objects.filter(account=mine).update(created_at=two_hours_ago)
    store(mine, 1, "old")
    Message.objects.filter(account=mine, subject="old0").update(
        created_at=timezone.now() - timedelta(hours=30)
    )
    body = page(client, root)
    assert current_hour_bar(body) == "5 messages"
    hour = two_hours_ago.replace(minute=0, second=0, microsecond=0)
    label = f"{hour:%H}:00-{(hour.hour + 1) % 24:02d}:00 UTC: 2 messages"
    assert f"<title>{label}</title>" in body
    assert "last 24 hours, UTC): 7" in body


def test_queue_depths(client, root):
    for _ in range(3):
        app.send_task("messages.no_such_task", queue=topics.QUEUE_GMAIL)
    try:
        body = page(client, root)
    finally:
        for key in queues.priority_keys(topics.QUEUE_GMAIL):
            syncstate.client().delete(key)
    assert re.search(rf'data-queue="{topics.QUEUE_GMAIL}">3<', body)
    assert re.search(rf'data-queue="{topics.QUEUE_NEW_MESSAGE}">\d+<', body)


def test_a_broker_that_does_not_answer_is_said_so(client, root, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    body = page(client, root)
    assert "the broker did not answer" in body
    assert "Accounts by status" in body


def test_who_may_open_it(client, django_user_model, operator):
    assert client.get(URL).status_code == 302  # to the admin login
    plain = django_user_model.objects.create_user("eve", "eve@example.com", "pw-eve-1234567")
    client.force_login(plain)
    assert client.get(URL).status_code == 302
    staff = django_user_model.objects.create_user("sam", "sam@example.com", "pw-sam-1234567")
    staff.is_staff = True
    staff.save()
    client.force_login(staff)
    assert client.get(URL).status_code == 403  # no view permission on accounts
    client.force_login(operator)
    assert client.get(URL).status_code == 200


def test_linked_from_the_admin_index(client, root):
    client.force_login(root)
    body = client.get(reverse("admin:index")).content.decode()
    assert f'href="{URL}"' in body
    assert "Mailstore" in body or "mailstore" in body.lower()  # the app list is still there
