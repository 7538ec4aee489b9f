"""Where the fake answers as Gmail does beyond the happy path: requests checked against the
discovery document, access tokens Google stops accepting, slow answers, untrash, snippets of
HTML-only mail, malformed ids."""

from __future__ import annotations

import json
import time
from email.message import EmailMessage

import google_auth_httplib2
import pytest
from googleapiclient.errors import HttpError

from tests.gmail_fake import api, discovery
from tests.gmail_fake.errors import ApiError
from tests.gmail_fake.fixtures import credentials, gmail_service, http, new_batch
from tests.mailfactory import make_mail


@pytest.fixture
def alice(gmail_server):
    mailbox, refresh_token = gmail_server.add_user("alice@gmail.com")
    return mailbox, gmail_service(gmail_server, refresh_token)


@pytest.fixture
def raw_http(gmail_server):
    """Plain authorized HTTP to the fake, for requests the client library would not build."""
    _, refresh_token = gmail_server.add_user("raw@gmail.com")
    authorized = google_auth_httplib2.AuthorizedHttp(
        credentials(gmail_server, refresh_token), http=http(gmail_server)
    )

    def get(path: str) -> tuple[int, dict]:
        response, body = authorized.request(f"{gmail_server.base_url}/gmail/v1/users/me/{path}")
        return response.status, json.loads(body or b"{}")

    return get


def test_every_method_the_fake_implements_is_in_the_discovery_document():
    assert set(api.ROUTES) <= {method.id for method in discovery.methods()}


def test_an_unknown_query_parameter_is_refused_as_google_does(raw_http):
    status, body = raw_http("messages?labelId=INBOX")
    assert status == 400
    error = body["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert error["message"] == (
        'Invalid JSON payload received. Unknown name "labelId": Cannot bind query parameter. '
        "Field 'labelId' could not be found in request message."
    )
    assert error["details"][0]["@type"] == "type.googleapis.com/google.rpc.BadRequest"


def test_parameters_every_method_takes_and_bad_values(raw_http, gmail_server):
    assert raw_http("labels?prettyPrint=false&fields=labels(id)&quotaUser=x")[0] == 200
    assert raw_http("messages?maxResults=ten")[0] == 400
    assert raw_http("messages?includeSpamTrash=maybe")[0] == 400
    mailbox = gmail_server.users["raw@gmail.com"]
    message = mailbox.add_message(make_mail("x"))
    assert raw_http(f"messages/{message.id}?format=raw")[0] == 200
    status, body = raw_http(f"messages/{message.id}?format=html")
    assert status == 400 and "format" in body["error"]["message"]
    assert raw_http(f"messages/{message.id}/modify")[0] == 404, "modify is a POST"


def test_a_missing_required_query_parameter_is_refused():
    """No Gmail method requires a query parameter today; the check is the document's."""
    method = discovery.Method(
        id="x.list",
        http_method="GET",
        patterns=(),
        parameters={"q": {"location": "query", "type": "string", "required": True}},
        placeholders=0,
    )
    with pytest.raises(ApiError, match="Required parameter: q"):
        discovery.check_query(method, {})
    discovery.check_query(method, {"q": ["x"]})


def test_paths_outside_the_api_and_methods_the_fake_lacks(raw_http):
    assert raw_http("nonsense")[0] == 404
    status, body = raw_http("threads")
    assert status == 501 and "gmail.users.threads.list" in body["error"]["message"]


def test_an_id_that_is_not_hex_is_400_and_an_unknown_one_404(alice):
    _, gmail = alice
    for bad_id, status in (("not-an-id", 400), ("0123456789abcdef", 404)):
        with pytest.raises(HttpError) as caught:
            gmail.users().messages().get(userId="me", id=bad_id).execute()
        assert caught.value.status_code == status
    with pytest.raises(HttpError) as caught:
        gmail.users().messages().trash(userId="me", id="xyz").execute()
    assert "Invalid id value" in str(caught.value)


def test_an_access_token_google_stops_accepting_is_refreshed_once(gmail_server, alice):
    _, gmail = alice
    gmail.users().getProfile(userId="me").execute()
    old_token = gmail._http.credentials.token
    gmail_server.unauthorized_next(1)

    gmail.users().labels().list(userId="me").execute()

    assert gmail_server.tokens.refreshes == 2
    assert gmail._http.credentials.token != old_token
    assert gmail_server.tokens.user_of(f"Bearer {old_token}") is None, "the old token is dead"
    assert gmail_server.calls == ["GET profile", "GET labels", "GET labels"]


def test_a_batch_whose_token_dies_midway_is_redone_after_one_refresh(gmail_server, alice):
    mailbox, gmail = alice
    ids = [mailbox.add_message(make_mail(f"m{i}")).id for i in range(4)]
    gmail.users().getProfile(userId="me").execute()
    gmail_server.unauthorized_next(1)  # the first part; the parts after it carry a dead token
    found: dict[str, dict] = {}

    def collect(request_id, response, exception):
        assert exception is None, exception
        found[request_id] = response

    batch = new_batch(gmail_server, collect)
    for gid in ids:
        batch.add(
            gmail.users().messages().get(userId="me", id=gid, format="minimal"), request_id=gid
        )
    batch.execute(http=gmail._http)

    assert set(found) == set(ids)
    assert gmail_server.tokens.refreshes == 2


def test_slow_answers_for_the_next_calls(gmail_server, alice):
    _, gmail = alice
    gmail.users().getProfile(userId="me").execute()
    gmail_server.slow_next(2, seconds=0.6)
    durations = []
    for _ in range(3):
        start = time.monotonic()
        gmail.users().getProfile(userId="me").execute()
        durations.append(time.monotonic() - start)
    assert durations[0] >= 0.6 and durations[1] >= 0.6
    assert durations[2] < 0.6


def test_untrash_puts_a_message_back_where_trash_took_it_from(alice):
    mailbox, gmail = alice
    messages = gmail.users().messages()
    work = mailbox.add_label("Work")
    received = mailbox.add_message(make_mail("in"), ["INBOX", "UNREAD", work.id])
    sent = mailbox.add_message(make_mail("out"), ["SENT"])

    for message in (received, sent):
        messages.trash(userId="me", id=message.id).execute()
        messages.trash(userId="me", id=message.id).execute()  # twice: still one way back
    back = messages.untrash(userId="me", id=received.id).execute()
    sent_back = messages.untrash(userId="me", id=sent.id).execute()
    history_id = mailbox.history_id
    again = messages.untrash(userId="me", id=received.id).execute()

    assert set(back["labelIds"]) == {"INBOX", "UNREAD", work.id}
    assert sent_back["labelIds"] == ["SENT"]
    assert again["labelIds"] == back["labelIds"] and mailbox.history_id == history_id


def test_the_snippet_of_html_only_mail_is_its_text(alice):
    mailbox, gmail = alice
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "a@example.org", "alice@gmail.com", "News"
    mail.set_content(
        "<html><head><style>p {color: red}</style></head><body><p>Big&nbsp;news:</p>"
        "<p>we <b>ship</b> &amp; celebrate</p><script>var x = 1;</script></body></html>",
        subtype="html",
    )
    message = mailbox.add_message(mail.as_bytes())

    got = gmail.users().messages().get(userId="me", id=message.id, format="minimal").execute()

    assert got["snippet"] == "Big news: we ship &amp; celebrate"
