"""The API against a real Dovecot: accounts created and tested through the imap adapter, and a
client's change reaching the server through the published task."""

import socket

import pytest

from emailplatform import topics
from emailplatform.celery import app
from messages.models import Account, Message
from smtp_sync.models import ImapSettings
from smtp_sync.smtp_transport import smtp_endpoint_for
from smtp_sync.sync import ImapAccountSync
from tests.mailfactory import make_mail

from .conftest import queued

pytestmark = pytest.mark.django_db(transaction=True)


def account_body(imap_user, password=None, **extra):
    return {
        "provider": "imap",
        "email_address": f"{imap_user.username}@example.com",
        "display_name": "Test mailbox",
        "password": imap_user.password if password is None else password,
        "settings": {
            "imap_host": imap_user.host,
            "imap_port": imap_user.port,
            "imap_security": "none",
            "username": imap_user.username,
        },
        **extra,
    }


def test_an_account_may_trust_its_smtp_servers_self_signed_certificate(
    api, imap_user, empty_queues
):
    body = account_body(imap_user)
    body["settings"].update(
        smtp_host=imap_user.host,
        smtp_port=587,
        smtp_security="starttls",
        smtp_trust_self_signed=True,
    )
    response = api.post("/api/accounts/", body, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["settings"]["smtp_trust_self_signed"] is True
    endpoint = smtp_endpoint_for(Account.objects.get(pk=response.json()["id"]))
    assert (endpoint.port, endpoint.security, endpoint.verify_certificate) == (
        587,
        "starttls",
        False,
    )


def run_published(queue: str) -> list:
    """Act as the worker: run each task waiting on the queue, in this process."""
    app.loader.import_default_modules()
    return [app.tasks[name].apply(args=args).get() for name, args in queued(queue)]


def test_create_an_imap_account_against_the_server(api, user, imap_user, empty_queues):
    response = api.post("/api/accounts/", account_body(imap_user), format="json")
    assert response.status_code == 201, response.content
    assert imap_user.password not in response.content.decode()
    body = response.json()
    assert body["settings"] == {
        "imap_host": imap_user.host,
        "imap_port": imap_user.port,
        "imap_security": "none",
        "username": imap_user.username,
        "smtp_host": "",
        "smtp_port": 465,
        "smtp_security": "ssl",
        "smtp_trust_self_signed": False,
    }
    account = Account.objects.get(pk=body["id"], owner=user)
    assert account.get_credentials() == {"password": imap_user.password}
    assert imap_user.password.encode() not in bytes(account.credentials_encrypted)
    assert "IMAP4REV1" in ImapSettings.objects.get(account=account).capabilities
    [(name, [payload])] = queued(topics.QUEUE_FULL_SYNC)
    assert name == "smtp_sync.full_sync"
    assert (payload["accountId"], payload["provider"], payload["continuation"]) == (
        account.pk,
        "imap",
        False,
    )


def test_wrong_password_is_refused_with_the_servers_reason(api, imap_user, empty_queues):
    response = api.post("/api/accounts/", account_body(imap_user, "wrong"), format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "auth_failed"
    assert "Authentication failed" in error["message"]
    assert imap_user.host in error["message"]
    assert "wrong" not in response.content.decode()
    assert not Account.objects.exists()
    assert queued(topics.QUEUE_FULL_SYNC) == []


def test_unreachable_server_is_a_connection_failure(api, imap_user):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    body = account_body(imap_user)
    body["settings"]["imap_port"] = closed_port
    response = api.post("/api/accounts/", body, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "connection_failed"
    assert "refused" in error["message"]
    assert not Account.objects.exists()


def test_test_connection_and_a_new_password(api, imap_account, imap_user):
    url = f"/api/accounts/{imap_account.pk}/"
    assert api.post(url + "test-connection/").json() == {"ok": True}

    imap_account.set_credentials({"password": "stale"})
    imap_account.status = Account.Status.AUTH_ERROR
    imap_account.save()
    refused = api.post(url + "test-connection/")
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "auth_failed"

    wrong = api.patch(url, {"password": "still-wrong"}, format="json")
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "auth_failed"
    assert Account.objects.get(pk=imap_account.pk).get_credentials() == {"password": "stale"}

    fixed = api.patch(url, {"password": imap_user.password}, format="json")
    assert fixed.status_code == 200, fixed.content
    assert fixed.json()["status"] == "active"
    assert imap_user.password not in fixed.content.decode()
    stored = Account.objects.get(pk=imap_account.pk)
    assert stored.get_credentials() == {"password": imap_user.password}


def server_flags(imap_user, folder, subject):
    with imap_user.client() as c:
        c.select_folder(folder, readonly=True)
        uids = c.search(["SUBJECT", subject])
        return {f.decode() for f in c.get_flags(uids)[uids[0]]} if uids else None


def test_marking_read_reaches_the_server(api, imap_account, imap_user, empty_queues):
    imap_user.append("INBOX", make_mail("Ping", message_id="<ping@x>"))
    ImapAccountSync(imap_account).sync()
    message = Message.objects.get(account=imap_account, subject="Ping")
    assert not message.is_read

    response = api.patch(
        f"/api/messages/{message.pk}/", {"is_read": True, "is_flagged": True}, format="json"
    )
    assert response.status_code == 202, response.content
    assert response.json() == {"status": "queued", "change": {"is_read": True, "is_flagged": True}}
    message.refresh_from_db()
    assert not message.is_read, "the store follows the server, not the request"

    outcomes = run_published(topics.QUEUE_SMTP)
    assert outcomes == [{"applied": {"read": True, "flagged": True}}]
    assert {"\\Seen", "\\Flagged"} <= server_flags(imap_user, "INBOX", "Ping")
    detail = api.get(f"/api/messages/{message.pk}/").json()
    assert detail["is_read"] and detail["is_flagged"]


def test_moving_to_trash_reaches_the_server(api, imap_account, imap_user, empty_queues):
    imap_user.append("INBOX", make_mail("Junk offer", message_id="<junk@x>"))
    ImapAccountSync(imap_account).sync()
    message = Message.objects.get(account=imap_account, subject="Junk offer")

    unknown = api.patch(f"/api/messages/{message.pk}/", {"folder": "Nope"}, format="json")
    assert unknown.status_code == 400
    assert "folder" in unknown.json()["error"]["fields"]

    for no_labels in ({"labels_add": ["Trash"]}, {"trash": False}):
        refused = api.patch(f"/api/messages/{message.pk}/", no_labels, format="json")
        assert refused.status_code == 400, "IMAP messages have folders, not labels"
        assert set(no_labels) <= set(refused.json()["error"]["fields"])

    assert (
        api.patch(f"/api/messages/{message.pk}/", {"trash": True}, format="json").status_code == 202
    )
    run_published(topics.QUEUE_SMTP)
    assert server_flags(imap_user, "INBOX", "Junk offer") is None
    assert server_flags(imap_user, "Trash", "Junk offer") is not None
    assert api.get(f"/api/messages/{message.pk}/").json()["folders"] == ["Trash"]
