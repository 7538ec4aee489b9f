"""users.watch / users.stop and Pub/Sub push delivery of the fake."""

from __future__ import annotations

import base64
import json
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import google_auth_httplib2
import httplib2
import pytest
from google.oauth2 import id_token

from tests.gmail_fake.fixtures import gmail_service
from tests.mailfactory import make_mail

TOPIC = "projects/test-project/topics/gmail"


@pytest.fixture
def receiver():
    """A local HTTP endpoint that records each POST it receives."""
    received: queue.Queue[dict] = queue.Queue()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.put({**body, "authorization": self.headers.get("Authorization")})
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/push", received
    server.shutdown()
    server.server_close()


def test_watch_then_each_change_is_pushed(gmail_server, receiver):
    endpoint, received = receiver
    mailbox, refresh_token = gmail_server.add_user("dave@gmail.com")
    gmail = gmail_service(gmail_server, refresh_token)
    subscription = gmail_server.subscribe(TOPIC, endpoint)

    watch = (
        gmail.users().watch(userId="me", body={"topicName": TOPIC, "labelIds": ["INBOX"]}).execute()
    )
    message = mailbox.add_message(make_mail("hello"), ["INBOX"])

    push = received.get(timeout=5)
    assert push["subscription"] == subscription
    assert json.loads(base64.b64decode(push["message"]["data"])) == {
        "emailAddress": "dave@gmail.com",
        "historyId": message.history_id,
    }
    assert push["message"]["messageId"] and push["message"]["publishTime"].endswith("Z")
    assert int(watch["historyId"]) < message.history_id
    days = (int(watch["expiration"]) / 1000 - time.time()) / 86400
    assert 6.99 < days <= 7


def _pushed_history_id(received) -> int:
    return json.loads(base64.b64decode(received.get(timeout=5)["message"]["data"]))["historyId"]


def test_changes_outside_the_watched_labels_after_stop_or_expiry_are_not_pushed(
    gmail_server, receiver
):
    """Deliveries go out in order, so a later change's push arriving next proves that the
    changes before it were not pushed."""
    endpoint, received = receiver
    mailbox, refresh_token = gmail_server.add_user("dave@gmail.com")
    gmail = gmail_service(gmail_server, refresh_token)
    gmail_server.subscribe(TOPIC, endpoint)
    users = gmail.users()
    watch_inbox = {"topicName": TOPIC, "labelIds": ["INBOX"]}
    users.watch(userId="me", body=watch_inbox).execute()

    mailbox.add_message(make_mail("sent"), ["SENT"])
    inbox = mailbox.add_message(make_mail("in"), ["INBOX"])
    assert _pushed_history_id(received) == inbox.history_id

    users.stop(userId="me").execute()
    mailbox.add_message(make_mail("after stop"), ["INBOX"])
    users.watch(userId="me", body=watch_inbox).execute()
    again = mailbox.add_message(make_mail("watched again"), ["INBOX"])
    assert _pushed_history_id(received) == again.history_id

    mailbox.watch.expiration = int(time.time() * 1000) - 1
    mailbox.add_message(make_mail("after expiry"), ["INBOX"])
    users.watch(userId="me", body=watch_inbox).execute()
    renewed = mailbox.add_message(make_mail("renewed"), ["INBOX"])
    assert _pushed_history_id(received) == renewed.history_id


def test_an_authenticated_push_carries_an_oidc_token_google_auth_verifies(gmail_server, receiver):
    endpoint, received = receiver
    mailbox, refresh_token = gmail_server.add_user("dave@gmail.com")
    gmail = gmail_service(gmail_server, refresh_token)
    gmail_server.subscribe(TOPIC, endpoint, audience=endpoint)
    gmail.users().watch(userId="me", body={"topicName": TOPIC}).execute()

    mailbox.add_message(make_mail("hello"), ["INBOX"])
    scheme, token = received.get(timeout=5)["authorization"].split(" ")
    verify = google_auth_httplib2.Request(httplib2.Http())

    claims = id_token.verify_token(
        token, verify, audience=endpoint, certs_url=gmail_server.certs_url
    )
    assert scheme == "Bearer"
    assert claims["iss"] == "https://accounts.google.com"
    assert claims["email"] == "gmail-push@test-project.iam.gserviceaccount.com"
    assert claims["email_verified"] is True
    with pytest.raises(ValueError, match="audience"):
        id_token.verify_token(
            token, verify, audience="https://elsewhere.example/", certs_url=gmail_server.certs_url
        )
