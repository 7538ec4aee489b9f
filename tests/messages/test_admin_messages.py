"""Synced mail in the admin: read-only pages (flags excepted), rows that read like a mail
client's, plain text as written, search through the full-text index, and each staff user
seeing only their own accounts' objects."""

from __future__ import annotations

import html
import re

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from messages.ingest import messages_upsert
from messages.models import Account, Message
from tests.conftest import incoming
from tests.mailfactory import make_mail

pytestmark = pytest.mark.django_db

TEXT = "Totals for March:\n    rent     1200\n    food      300\n\n\n-- \nBob"
MESSAGES = reverse("admin:mailstore_message_changelist")


def page_url(message: Message) -> str:
    return reverse("admin:mailstore_message_change", args=[message.pk])


@pytest.fixture
def root(client, django_user_model):
    user = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")
    client.force_login(user)
    return user


@pytest.fixture
def mailbox(account):
    messages_upsert(
        account=account,
        items=[
            incoming(make_mail("Monthly budget", body=TEXT), folder="INBOX", uid=4),
            incoming(
                make_mail(
                    "Invoice 2291",
                    body="The zebracorn shipment is late.",
                    message_id="<inv-2291@billing.example>",
                    sender="Billing Team <billing@example.net>",
                ),
                folder="Archive",
                uid=17,
            ),
        ],
    )
    return {m.subject: m for m in Message.objects.filter(account=account)}


def form_data(page: str) -> dict[str, str]:
    """What a browser would post back from PAGE's form: hidden inputs and checked boxes."""
    data = {}
    for tag in re.findall(r"<input[^>]+>", page):
        name = re.search(r'name="([^"]+)"', tag)
        value = re.search(r'value="([^"]*)"', tag)
        if not name or name.group(1) == "csrfmiddlewaretoken":
            continue
        if 'type="hidden"' in tag or ('type="checkbox"' in tag and "checked" in tag):
            data[name.group(1)] = html.unescape(value.group(1)) if value else "on"
    return data


def test_a_synced_message_page_is_read_only_but_for_its_flags(client, root, mailbox):
    message = mailbox["Monthly budget"]
    page = client.get(page_url(message)).content.decode()
    for inline in ("locations", "attachments"):  # no "Add another" row
        assert f'name="{inline}-MAX_NUM_FORMS" value="0"' in page
    assert 'class="deletelink"' not in page
    assert 'name="subject"' not in page and 'name="from_address"' not in page
    assert 'name="is_read"' in page and 'name="is_flagged"' in page
    # Where it is reads like a mail client, not "message 5 in folder 3 (UID 4)"
    assert "INBOX, UID 4" in page and "in folder" not in page
    # The plain text as written: line breaks, indentation and runs of spaces
    assert html.escape(TEXT, quote=False) in page
    assert re.search(
        r"<pre[^>]*white-space:pre-wrap[^>]*>Totals for March:\n    rent     1200", page
    )

    data = form_data(page)
    data["is_flagged"] = "on"  # a local account: the store changes at once
    response = client.post(page_url(message), data)
    assert response.status_code == 302, re.findall(r"errorlist.{0,200}", response.content.decode())
    message.refresh_from_db()
    assert message.is_flagged and not message.is_read
    assert message.subject == "Monthly budget"


def test_folders_threads_and_sync_runs_cannot_be_added_or_edited(client, root, mailbox):
    folder = mailbox["Monthly budget"].locations.get().folder
    for model in ("folder", "thread", "syncrun", "message"):
        add = client.get(reverse(f"admin:mailstore_{model}_add"))
        assert add.status_code == 403, model
    page = client.get(reverse("admin:mailstore_folder_change", args=[folder.pk])).content.decode()
    assert 'name="name"' not in page and 'name="uidvalidity"' not in page
    assert 'name="_save"' not in page
    folders = client.get(reverse("admin:mailstore_folder_changelist")).content.decode()
    assert f'href="{MESSAGES}?folder={folder.pk}">1</a>' in folders
    in_folder = client.get(f"{MESSAGES}?folder={folder.pk}").content.decode()
    assert "Monthly budget" in in_folder and "Invoice 2291" not in in_folder


def search(client, term: str) -> tuple[str, list[str]]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(MESSAGES, {"q": term})
    assert response.status_code == 200
    return response.content.decode(), [q["sql"] for q in queries.captured_queries]


def test_search_uses_the_full_text_index(client, root, mailbox):
    page, sql = search(client, "zebracorn")
    assert "Invoice 2291" in page and "Monthly budget" not in page
    listing = [q for q in sql if "mailstore_message" in q and "@@" in q]
    assert listing, "the list is filtered with the search vector"
    assert not any("ILIKE" in q.upper() or "UPPER(" in q.upper() for q in sql)

    page, _ = search(client, '"monthly budget" -invoice')
    assert "Monthly budget" in page and "Invoice 2291" not in page
    page, _ = search(client, "billing")  # the sender's name
    assert "Invoice 2291" in page
    page, _ = search(client, "<inv-2291@billing.example>")
    assert "Invoice 2291" in page and "Monthly budget" not in page

    page, _ = search(client, "-" * 40)  # overflows websearch_to_tsquery's parser
    assert "This search cannot be understood." in page


def staff_user(django_user_model, name: str, *perms: str):
    user = django_user_model.objects.create_user(name, f"{name}@example.com", "pw-staff-123")
    user.is_staff = True
    user.save()
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return user


VIEW_ALL = (
    "mailstore.view_account",
    "mailstore.view_message",
    "mailstore.view_folder",
    "mailstore.view_thread",
    "mailstore.view_syncrun",
    "mailstore.view_deadletter",
    "mailstore.change_message",
    "mailstore.add_account",
    "smtp_sync.add_imapsettings",
    "smtp_sync.view_imapsettings",
    "gmail_sync.add_gmailsettings",
)


def test_search_without_the_content_permission_matches_metadata_only(
    client, django_user_model, mailbox, account
):
    owner = staff_user(django_user_model, "owner", *VIEW_ALL)
    account.owner = owner
    account.save()
    client.force_login(owner)
    page, _ = search(client, "zebracorn")  # a word of the body only
    assert "Invoice 2291" not in page
    page, _ = search(client, "invoice")
    assert "Invoice 2291" in page


def test_a_staff_user_sees_only_their_own_objects(client, django_user_model, root, mailbox):
    ana = staff_user(django_user_model, "ana", *VIEW_ALL)
    mine = Account.objects.create(owner=ana, provider="local", email_address="ana@example.com")
    messages_upsert(account=mine, items=[incoming(make_mail("Ana's own"), folder="INBOX", uid=1)])
    others = mailbox["Monthly budget"]
    client.force_login(ana)

    accounts = client.get(reverse("admin:mailstore_account_changelist")).content.decode()
    assert "ana@example.com" in accounts and "alice@example.com" not in accounts
    listing = client.get(MESSAGES).content.decode()
    assert "Ana&#x27;s own" in listing and "Monthly budget" not in listing
    for url in (
        page_url(others),
        reverse("admin:mailstore_account_change", args=[others.account_id]),
        reverse("admin:mailstore_folder_change", args=[others.locations.get().folder_id]),
        reverse("admin:mailstore_thread_change", args=[others.thread_id]),
    ):
        response = client.get(url)
        assert response.status_code == 302 and response.url == reverse("admin:index"), url
    for model in ("folder", "thread", "syncrun", "deadletter"):
        text = client.get(reverse(f"admin:mailstore_{model}_changelist")).content.decode()
        assert "alice@example.com" not in text, model

    # New accounts are their own: no one else to pick as the owner.
    for url in (
        reverse("admin:smtp_sync_imapsettings_add"),
        reverse("admin:gmail_sync_gmailsettings_connect"),
    ):
        form = client.get(url).content.decode()
        owners = re.findall(r'<option value="(\d+)"', form)
        assert owners == [str(ana.pk)], url
    refused = client.post(
        reverse("admin:gmail_sync_gmailsettings_connect"), {"owner": others.account.owner_id}
    )
    assert refused.status_code == 200 and "Select a valid choice" in refused.content.decode()

    client.force_login(root)  # a superuser operates the platform: everyone's
    listing = client.get(MESSAGES).content.decode()
    assert "Ana&#x27;s own" in listing and "Monthly budget" in listing


def test_lists_clip_long_text_keeping_it_in_the_tooltip(client, root, account):
    subject = "Very long subject " + "x" * 300
    messages_upsert(account=account, items=[incoming(make_mail(subject), folder="INBOX", uid=9)])
    listing = client.get(MESSAGES).content.decode()
    cell = re.search(r'<th class="field-subject_or_none">(.*?)</th>', listing).group(1)
    assert f'title="{subject}"' in cell
    shown = re.sub(r"<[^>]+>", "", cell)
    assert shown.startswith("Very long subject xx") and shown.endswith("…") and len(shown) <= 70


@pytest.mark.parametrize("with_text", [True, False])
def test_the_search_can_be_answered_by_the_index(mailbox, with_text):
    """The plan PostgreSQL has for the admin's search, sequential scans forbidden: it exists
    only if the GIN index (account, search_vector) answers the @@ condition."""
    from messages.admin_search import message_search

    found = message_search(Message.objects.all(), "zebracorn", with_text=with_text)
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        plan = found.explain()
    assert "message_account_search" in plan, plan
    assert [m.subject for m in found] == (["Invoice 2291"] if with_text else [])
