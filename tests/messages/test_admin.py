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


# Who reads mail ---------------------------------------------------------------------------
BODY_CANARY = "body-canary-7c1e: the quarterly numbers"


@pytest.fixture
def mail(account):
    raw = make_mail(
        "Metadata subject",
        body=BODY_CANARY,
        html=f"<p>{BODY_CANARY}</p>",
        attachments=[("q.pdf", "application/pdf", b"%PDF attachment-canary")],
    )
    messages_upsert(account=account, items=[incoming(raw, folder="INBOX", uid=1)])
    DeadLetter.objects.create(
        task_name="t", reason="bad", payload={"raw": BODY_CANARY}, account_id=account.pk
    )
    SyncRun.objects.create(account=account, kind="full")
    return Message.objects.get(account=account)


def staff(django_user_model, client, *perms, owning=()):
    """A logged-in staff user (not a superuser) with PERMS, owner of the accounts OWNING: such
    a user sees only their own accounts' objects in the admin."""
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("op", "op@example.com", "pw-op-12345")
    user.is_staff = True
    user.save()
    for account in owning:
        account.owner = user
        account.save(update_fields=["owner"])
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    client.force_login(user)
    return client


def admin_urls(mail) -> list[str]:
    """Every URL of the admin site, its path parameters filled with real objects."""
    from django.contrib import admin
    from django.urls import URLPattern, URLResolver

    attachment = mail.attachments.first()
    objects = {}
    for model in admin.site._registry:
        obj = model._default_manager.order_by("pk").first()
        if obj is not None:
            objects[model] = obj.pk
    urls = []

    def walk(patterns, prefix, model):
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + str(p.pattern), model)
            elif isinstance(p, URLPattern):
                route = prefix + str(p.pattern)
                if "<path:object_id>" in route or "<int:pk>" in route:
                    owner = model or Message
                    if owner not in objects:
                        continue
                    route = route.replace("<path:object_id>", str(objects[owner]))
                    route = route.replace("<int:pk>", str(mail.pk))
                route = route.replace("<int:attachment_id>", str(attachment.pk))
                if "<" in route:  # app_list's <app_label>, the javascript catalog, ...
                    route = route.replace(
                        "(?P<app_label>auth|mailstore|smtp_sync|django_celery_beat|axes|knox)/$",
                        "mailstore/",
                    )
                    if "<" in route or "(" in route:
                        continue
                urls.append("/" + route.lstrip("^").rstrip("$"))

    for model, model_admin in admin.site._registry.items():
        walk(
            model_admin.get_urls(),
            f"admin/{model._meta.app_label}/{model._meta.model_name}/",
            model,
        )
    for p in admin.site.get_urls():
        if isinstance(p, URLPattern):
            walk([p], "admin/", None)
    urls.append("/admin/mailstore/")
    return sorted(set(urls))


def test_every_admin_url_refuses_staff_without_permissions(client, django_user_model, mail):
    op = staff(django_user_model, client)
    urls = admin_urls(mail)
    assert len(urls) > 40, urls
    assert f"/admin/mailstore/message/{mail.pk}/raw/" in urls
    opened = []
    for url in urls:
        response = op.get(url)
        content = b"".join(response.streaming_content) if response.streaming else response.content
        assert BODY_CANARY.encode() not in content, url
        assert b"attachment-canary" not in content, url
        assert b"Metadata subject" not in content, url
        if response.status_code == 200:
            opened.append(url)
        else:
            assert response.status_code in (302, 403, 404, 405), (url, response.status_code)
    # What a staff user without permissions may open: the index, password change, logout.
    assert set(opened) <= {
        "/admin/",
        "/admin/password_change/",
        "/admin/password_change/done/",
        "/admin/jsi18n/",
        "/admin/autocomplete/",
    }, opened


def test_the_raw_and_attachment_views_need_the_message_permission(client, django_user_model, mail):
    """They used to check only is_staff: every user's mail for any staff user."""
    op = staff(django_user_model, client)
    attachment = mail.attachments.first()
    for url in (
        reverse("admin:mailstore_message_raw", args=[mail.pk]),
        reverse("admin:mailstore_message_attachment", args=[mail.pk, attachment.pk]),
    ):
        assert op.get(url).status_code == 403


def test_view_permission_shows_metadata_but_not_content(client, django_user_model, mail):
    op = staff(
        django_user_model,
        client,
        "mailstore.view_message",
        "mailstore.view_attachment",
        "mailstore.view_deadletter",
        owning=[mail.account],
    )
    page = op.get(reverse("admin:mailstore_message_change", args=[mail.pk]))
    assert page.status_code == 200
    text = page.content.decode()
    assert "Metadata subject" in text and "q.pdf" in text
    assert BODY_CANARY not in text and "Download .eml" not in text
    assert mail.attachments.first().file.name not in text, "no link to the attachment's file"
    assert op.get(reverse("admin:mailstore_message_raw", args=[mail.pk])).status_code == 403
    attachment = mail.attachments.first()
    url = reverse("admin:mailstore_message_attachment", args=[mail.pk, attachment.pk])
    assert op.get(url).status_code == 403
    letter = DeadLetter.objects.get()
    page = op.get(reverse("admin:mailstore_deadletter_change", args=[letter.pk]))
    assert page.status_code == 200 and BODY_CANARY not in page.content.decode()


def test_read_mail_content_permission_opens_the_content(client, django_user_model, mail):
    op = staff(
        django_user_model,
        client,
        "mailstore.view_message",
        "mailstore.read_mail_content",
        owning=[mail.account],
    )
    text = op.get(reverse("admin:mailstore_message_change", args=[mail.pk])).content.decode()
    assert BODY_CANARY in text and "Download .eml" in text
    raw = op.get(reverse("admin:mailstore_message_raw", args=[mail.pk]))
    assert raw.status_code == 200
    assert raw["Content-Security-Policy"] == "sandbox; default-src 'none'"
    assert BODY_CANARY.encode() in b"".join(raw.streaming_content)
    attachment = mail.attachments.first()
    url = reverse("admin:mailstore_message_attachment", args=[mail.pk, attachment.pk])
    served = op.get(url)
    assert b"".join(served.streaming_content) == b"%PDF attachment-canary"


def test_read_mail_content_alone_opens_nothing(client, django_user_model, mail):
    op = staff(django_user_model, client, "mailstore.read_mail_content")
    assert op.get(reverse("admin:mailstore_message_raw", args=[mail.pk])).status_code == 403
