"""users.history.list of the fake, through google-api-python-client."""

from __future__ import annotations

import pytest
from googleapiclient.errors import HttpError

from tests.gmail_fake.fixtures import gmail_service
from tests.mailfactory import make_mail


@pytest.fixture
def carol(gmail_server):
    mailbox, refresh_token = gmail_server.add_user("carol@gmail.com")
    return mailbox, gmail_service(gmail_server, refresh_token)


def _all_history(gmail, start: str, **params) -> tuple[list[dict], str]:
    records, token = [], None
    while True:
        page = (
            gmail.users()
            .history()
            .list(userId="me", startHistoryId=start, pageToken=token, **params)
            .execute()
        )
        records += page.get("history", [])
        token = page.get("nextPageToken")
        if not token:
            return records, page["historyId"]


def test_history_after_add_modify_and_delete(carol):
    mailbox, gmail = carol
    start = gmail.users().getProfile(userId="me").execute()["historyId"]
    kept = mailbox.add_message(make_mail("kept"), ["INBOX", "UNREAD"])
    gone = mailbox.add_message(make_mail("gone"), ["INBOX"])
    gmail.users().messages().modify(
        userId="me", id=kept.id, body={"removeLabelIds": ["UNREAD"], "addLabelIds": ["STARRED"]}
    ).execute()
    gmail.users().messages().delete(userId="me", id=gone.id).execute()

    records, current = _all_history(gmail, start, maxResults=2)

    ids = [int(r["id"]) for r in records]
    assert ids == sorted(set(ids)) and ids[0] > int(start)
    assert current == str(mailbox.history_id) == records[-1]["id"]
    kinds = [next(k for k in r if k not in ("id", "messages")) for r in records]
    assert kinds == [
        "messagesAdded",
        "messagesAdded",
        "labelsAdded",
        "labelsRemoved",
        "messagesDeleted",
    ]
    assert records[2]["labelsAdded"][0]["labelIds"] == ["STARRED"]
    assert records[3]["labelsRemoved"][0]["labelIds"] == ["UNREAD"]
    assert records[4]["messagesDeleted"][0]["message"]["id"] == gone.id
    assert records[0]["messages"] == [{"id": kept.id, "threadId": kept.thread_id}]


def test_history_filters_by_type_and_label(carol):
    mailbox, gmail = carol
    start = str(mailbox.history_id)
    inbox = mailbox.add_message(make_mail("in"), ["INBOX"])
    mailbox.add_message(make_mail("sent"), ["SENT"])
    mailbox.modify(inbox.id, add=["STARRED"])

    added, _ = _all_history(gmail, start, historyTypes=["messageAdded"])
    in_inbox, _ = _all_history(gmail, start, labelId="INBOX")

    assert [r["messagesAdded"][0]["message"]["labelIds"] for r in added] == [["INBOX"], ["SENT"]]
    assert [r["messages"][0]["id"] for r in in_inbox] == [inbox.id, inbox.id]


def test_history_ids_only_grow(carol):
    mailbox, gmail = carol
    seen = [int(gmail.users().getProfile(userId="me").execute()["historyId"])]
    message = mailbox.add_message(make_mail("x"))
    for change in (["STARRED"], ["IMPORTANT"]):
        seen.append(int(message.history_id))
        gmail.users().messages().modify(
            userId="me", id=message.id, body={"addLabelIds": change}
        ).execute()
    seen.append(
        int(gmail.users().messages().get(userId="me", id=message.id).execute()["historyId"])
    )

    assert seen == sorted(set(seen))


def test_expired_start_history_id_is_404_and_the_profile_gives_a_fresh_one(carol):
    mailbox, gmail = carol
    old = str(mailbox.history_id)
    mailbox.add_message(make_mail("x"))

    mailbox.expire_history()

    with pytest.raises(HttpError) as caught:
        gmail.users().history().list(userId="me", startHistoryId=old).execute()
    assert caught.value.status_code == 404
    fresh = gmail.users().getProfile(userId="me").execute()["historyId"]
    mailbox.add_message(make_mail("y"))
    records, _ = _all_history(gmail, fresh)
    assert len(records) == 1
