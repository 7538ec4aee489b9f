"""The admin an operator uses: every page renders, mail HTML is sanitized, secrets never shown."""

import pytest
from django.urls import reverse

from messages.ingest import messages_upsert
from messages.models import DeadLetter, Message, SyncRun
from tests.conftest import incoming
from tests.mailfactory import make_mail

pytestmark = pytest.mark.django_db

XSS_HTML = (
    '<p>Hello <img src="x" onerror="alert(1)"><script>alert(2)</script>'
    '<a href="javascript:alert(3)">click</a><svg onload="alert(4)"></svg></p>'
)


@pytest.fixture
def staff_client(client, django_user_model):
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")
    client.force_login(admin)
    return client


@pytest.fixture
def stored(account):
    account.set_credentials({"password": "hunter2-very-secret"})
    account.save()
    raw = make_mail(
        "Quarterly report", html=XSS_HTML, attachments=[("q.pdf", "application/pdf", b"%PDF")]
    )
    messages_upsert(account=account, items=[incoming(raw, folder="INBOX", uid=1)])
    SyncRun.objects.create(account=account, kind="full", progress_done=5, progress_total=10)
    DeadLetter.objects.create(task_name="t", reason="messages/0: bad", payload={"x": 1})
    return Message.objects.get(account=account)


@pytest.mark.parametrize(
    "model", ["account", "folder", "thread", "message", "syncrun", "deadletter"]
)
def test_changelists_render(staff_client, stored, model):
    response = staff_client.get(reverse(f"admin:mailstore_{model}_changelist"))
    assert response.status_code == 200
    assert b"hunter2-very-secret" not in response.content


def test_account_list_shows_status_and_progress(staff_client, stored):
    body = staff_client.get(reverse("admin:mailstore_account_changelist")).content.decode()
    assert "alice@example.com" in body
    assert '<progress max="100" value="50">' in body


def test_account_page_never_shows_credentials(staff_client, stored):
    url = reverse("admin:mailstore_account_change", args=[stored.account_id])
    body = staff_client.get(url).content
    assert b"hunter2-very-secret" not in body
    assert b"credentials_encrypted" not in body


def test_message_page_renders_sanitized_html_and_links_raw(staff_client, stored):
    body = staff_client.get(reverse("admin:mailstore_message_change", args=[stored.pk])).content
    text = body.decode()
    assert "Quarterly report" in text and "q.pdf" in text
    assert "<script>alert(2)" not in text
    assert "onerror" not in text and "onload" not in text
    assert "javascript:alert" not in text
    raw_url = reverse("admin:mailstore_message_raw", args=[stored.pk])
    assert raw_url in text
    raw = staff_client.get(raw_url)
    assert raw["Content-Type"] == "message/rfc822"
    assert b"".join(raw.streaming_content) == bytes(stored.raw.content())


def test_raw_source_needs_staff(client, stored):
    response = client.get(reverse("admin:mailstore_message_raw", args=[stored.pk]))
    assert response.status_code == 302


def test_sync_now_and_pause_actions(staff_client, stored):
    url = reverse("admin:mailstore_account_changelist")
    staff_client.post(url, {"action": "pause", "_selected_action": [stored.account_id]})
    stored.account.refresh_from_db()
    assert stored.account.status == "paused"
    staff_client.post(url, {"action": "resume", "_selected_action": [stored.account_id]})
    stored.account.refresh_from_db()
    assert stored.account.status == "active"


def test_inline_images_are_served_and_remote_images_blocked(staff_client, account):
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"] = "a@example.com"
    msg["Subject"] = "with images"
    msg.set_content("x")
    msg.add_alternative(
        '<p><img src="cid:logo@x"> <img src="https://tracker.example/pixel.gif"></p>',
        subtype="html",
    )
    msg.get_payload()[1].add_related(b"GIF89a-bytes", "image", "gif", cid="<logo@x>")
    messages_upsert(account=account, items=[incoming(bytes(msg), folder="INBOX", uid=1)])
    message = Message.objects.get(account=account, subject="with images")
    body = staff_client.get(reverse("admin:mailstore_message_change", args=[message.pk])).content
    text = body.decode()
    assert "tracker.example" not in text
    logo = message.attachments.get(content_id="logo@x")
    url = reverse("admin:mailstore_message_attachment", args=[message.pk, logo.pk])
    assert f'src="http://testserver{url}"' in text
    served = staff_client.get(url)
    assert b"".join(served.streaming_content) == b"GIF89a-bytes"
