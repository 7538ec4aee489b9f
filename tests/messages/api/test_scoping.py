"""Every object belongs to its owner: another user gets 404 (never 403), empty lists, and
changes nothing. Staff get no extra API powers."""

import pytest

from messages.models import Account, Attachment, ChangeEvent, Message

from .conftest import queued, token_client

pytestmark = pytest.mark.django_db

# (method, url, body): every endpoint that names one of Alice's objects.
TARGETED = [
    ("get", "/api/accounts/{account}/", None),
    ("patch", "/api/accounts/{account}/", {"display_name": "pwned"}),
    ("delete", "/api/accounts/{account}/", None),
    ("post", "/api/accounts/{account}/sync/", {"full": True}),
    ("post", "/api/accounts/{account}/test-connection/", None),
    ("get", "/api/accounts/{account}/folders/", None),
    ("get", "/api/threads/{thread}/", None),
    ("get", "/api/messages/{message}/", None),
    ("patch", "/api/messages/{message}/", {"is_read": True}),
    ("patch", "/api/messages/{message}/", {"trash": True}),
    ("get", "/api/messages/{message}/raw/", None),
    ("get", "/api/attachments/{attachment}/download/", None),
]

LISTS = [
    "/api/accounts/",
    "/api/folders/",
    "/api/folders/?account={account}",
    "/api/threads/",
    "/api/threads/?account={account}",
    "/api/messages/",
    "/api/messages/?account={account}",
    "/api/messages/?thread={thread}",
    "/api/messages/?folder={folder}",
    "/api/messages/?q=quarterly",
]


@pytest.fixture
def alices(mailbox):
    return {
        "account": mailbox.account.pk,
        "thread": mailbox.report.thread_id,
        "message": mailbox.report.pk,
        "attachment": Attachment.objects.get(message=mailbox.report).pk,
        "folder": mailbox.inbox.pk,
    }


@pytest.fixture
def staff_api(django_user_model):
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-1")
    return token_client(admin)


def snapshot(mailbox):
    return (
        Account.objects.filter(pk=mailbox.account.pk).values().get(),
        list(Message.objects.filter(account=mailbox.account).values().order_by("id")),
        ChangeEvent.objects.count(),
    )


@pytest.mark.parametrize("client_name", ["bob_api", "staff_api"])
@pytest.mark.parametrize(("method", "url", "body"), TARGETED)
def test_another_users_object_is_not_found_and_unchanged(
    request,
    mailbox,
    alices,
    client_name,
    method,
    url,
    body,
    empty_queues,
    django_capture_on_commit_callbacks,
):
    client = request.getfixturevalue(client_name)
    before = snapshot(mailbox)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = getattr(client, method)(url.format(**alices), body, format="json")
    assert response.status_code == 404, response.content
    assert response.json()["error"]["code"] == "not_found"
    assert snapshot(mailbox) == before
    assert callbacks == []
    assert all(queued(q) == [] for q in ("default", "email_full_sync", "smtp"))


@pytest.mark.parametrize("client_name", ["bob_api", "staff_api"])
@pytest.mark.parametrize("url", LISTS)
def test_another_users_objects_are_not_listed(request, mailbox, alices, client_name, url):
    response = request.getfixturevalue(client_name).get(url.format(**alices))
    assert response.status_code == 200
    assert response.json()["results"] == []


@pytest.mark.parametrize("url", LISTS)
def test_the_owner_sees_them(api, alices, url):
    assert api.get(url.format(**alices)).json()["results"] != []


def test_another_users_changes_are_not_in_the_feed(bob_api, mailbox):
    assert ChangeEvent.objects.filter(owner=mailbox.account.owner).exists()
    assert bob_api.get("/api/changes/").json() == {"changes": [], "cursor": 0, "has_more": False}


def test_bobs_account_creation_stays_his(bob_api, bob, api, mailbox):
    response = bob_api.post(
        "/api/accounts/", {"provider": "local", "email_address": "bob@example.com"}, format="json"
    )
    assert Account.objects.get(pk=response.json()["id"]).owner == bob
    assert [a["id"] for a in api.get("/api/accounts/").json()["results"]] == [mailbox.account.pk]


@pytest.mark.parametrize(("method", "url", "body"), TARGETED)
def test_without_credentials_it_is_401(client, alices, method, url, body):
    response = getattr(client, method)(url.format(**alices), body, content_type="application/json")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert response["WWW-Authenticate"] == "Token"
