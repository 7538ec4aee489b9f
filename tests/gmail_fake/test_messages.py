"""The fake's messages and labels, driven through google-api-python-client as production is."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from googleapiclient.errors import HttpError

from tests.gmail_fake.fixtures import gmail_service
from tests.mailfactory import make_mail


@pytest.fixture
def alice(gmail_server):
    mailbox, refresh_token = gmail_server.add_user("alice@gmail.com")
    return mailbox, gmail_service(gmail_server, refresh_token)


def test_list_pages_newest_first_without_spam_and_trash(alice):
    mailbox, gmail = alice
    added = [
        mailbox.add_message(make_mail(f"m{i}"), internal_date=1_700_000_000_000 + i * 1000)
        for i in range(7)
    ]
    mailbox.add_message(make_mail("junk"), ["SPAM"])
    mailbox.add_message(make_mail("binned"), ["TRASH"])

    seen, token, pages = [], None, 0
    while True:
        page = gmail.users().messages().list(userId="me", maxResults=3, pageToken=token).execute()
        pages += 1
        assert page["resultSizeEstimate"] == 7
        seen += [m["id"] for m in page["messages"]]
        token = page.get("nextPageToken")
        if not token:
            break

    assert pages == 3
    assert seen == [m.id for m in reversed(added)]
    everything = gmail.users().messages().list(userId="me", includeSpamTrash=True).execute()
    assert everything["resultSizeEstimate"] == 9


def test_list_filters_by_every_label_given(alice):
    mailbox, gmail = alice
    label = mailbox.add_label("Work/Projects")
    starred = mailbox.add_message(make_mail("a"), ["INBOX", "STARRED", label.id])
    mailbox.add_message(make_mail("b"), ["INBOX", label.id])

    page = gmail.users().messages().list(userId="me", labelIds=["STARRED", label.id]).execute()

    assert [m["id"] for m in page["messages"]] == [starred.id]
    assert page["messages"][0]["threadId"] == starred.thread_id


def test_get_raw_minimal_and_metadata(alice):
    mailbox, gmail = alice
    raw = make_mail("Quarterly report", body="It's <b>done</b>, see   attached.\n")
    stored = mailbox.add_message(raw, ["INBOX", "UNREAD"], internal_date=1_700_000_123_456)
    messages = gmail.users().messages()

    full = messages.get(userId="me", id=stored.id, format="raw").execute()
    minimal = messages.get(userId="me", id=stored.id, format="minimal").execute()
    metadata = messages.get(
        userId="me", id=stored.id, format="metadata", metadataHeaders=["Subject"]
    ).execute()

    assert base64.urlsafe_b64decode(full["raw"]) == raw
    assert len(stored.id) == 16 and int(stored.id, 16) > 0
    assert full["threadId"] == stored.id
    assert full["internalDate"] == "1700000123456"
    assert full["labelIds"] == ["INBOX", "UNREAD"]
    assert full["sizeEstimate"] == len(raw)
    assert int(full["historyId"]) > 0
    assert full["snippet"] == "It&#39;s &lt;b&gt;done&lt;/b&gt;, see attached."
    assert "raw" not in minimal and "payload" not in minimal
    assert metadata["payload"]["headers"] == [{"name": "Subject", "value": "Quarterly report"}]


def test_get_unknown_message_is_404(alice):
    _, gmail = alice
    with pytest.raises(HttpError) as caught:
        gmail.users().messages().get(userId="me", id="18c0000000000000").execute()
    assert caught.value.status_code == 404


def test_ids_grow_and_replies_share_the_thread(alice):
    mailbox, gmail = alice
    first = mailbox.add_message(make_mail("Lunch?", message_id="<a@example.org>"))
    reply = make_mail(
        "Re: Lunch?",
        message_id="<b@example.org>",
        in_reply_to="<a@example.org>",
        references=["<a@example.org>"],
        sender="Alice <alice@gmail.com>",
        to="bob@example.org",
    )
    other_subject = make_mail("Something else", in_reply_to="<a@example.org>")

    sent = (
        gmail.users()
        .messages()
        .send(userId="me", body={"raw": base64.urlsafe_b64encode(reply).decode()})
        .execute()
    )
    unrelated = mailbox.add_message(other_subject)

    assert sent["labelIds"] == ["SENT"]
    assert sent["threadId"] == first.id
    assert int(sent["id"], 16) > int(first.id, 16)
    assert unrelated.thread_id == unrelated.id


def test_modify_trash_untrash_delete(alice):
    mailbox, gmail = alice
    message = mailbox.add_message(make_mail("x"), ["INBOX", "UNREAD"])
    messages = gmail.users().messages()

    read = messages.modify(
        userId="me", id=message.id, body={"removeLabelIds": ["UNREAD"], "addLabelIds": ["STARRED"]}
    ).execute()
    trashed = messages.trash(userId="me", id=message.id).execute()
    untrashed = messages.untrash(userId="me", id=message.id).execute()
    messages.delete(userId="me", id=message.id).execute()

    assert read["labelIds"] == ["INBOX", "STARRED"]
    assert "TRASH" in trashed["labelIds"] and "INBOX" not in trashed["labelIds"]
    assert "TRASH" not in untrashed["labelIds"]
    with pytest.raises(HttpError) as caught:
        messages.get(userId="me", id=message.id).execute()
    assert caught.value.status_code == 404


def test_modify_with_an_unknown_label_is_refused(alice):
    mailbox, gmail = alice
    message = mailbox.add_message(make_mail("x"))
    with pytest.raises(HttpError) as caught:
        gmail.users().messages().modify(
            userId="me", id=message.id, body={"addLabelIds": ["Label_404"]}
        ).execute()
    assert caught.value.status_code == 400


def test_profile_and_labels(alice):
    mailbox, gmail = alice
    nested = mailbox.add_label("Clients/Acme")
    mailbox.add_message(make_mail("a", message_id="<a@x>"), ["INBOX", "UNREAD", nested.id])
    mailbox.add_message(make_mail("Re: a", in_reply_to="<a@x>"), ["INBOX", nested.id])

    profile = gmail.users().getProfile(userId="me").execute()
    labels = gmail.users().labels().list(userId="me").execute()["labels"]
    acme = gmail.users().labels().get(userId="me", id=nested.id).execute()

    assert profile == {
        "emailAddress": "alice@gmail.com",
        "messagesTotal": 2,
        "threadsTotal": 1,
        "historyId": str(mailbox.history_id),
    }
    by_id = {label["id"]: label for label in labels}
    assert {"INBOX", "SENT", "DRAFT", "TRASH", "SPAM", "UNREAD", "CATEGORY_SOCIAL"} <= set(by_id)
    assert by_id["INBOX"]["type"] == "system"
    assert by_id[nested.id]["name"] == "Clients/Acme" and by_id[nested.id]["type"] == "user"
    assert (acme["messagesTotal"], acme["messagesUnread"], acme["threadsTotal"]) == (2, 1, 1)


def test_insert_and_import_through_upload_and_json(alice):
    from googleapiclient.http import MediaInMemoryUpload

    mailbox, gmail = alice
    raw = make_mail("Imported", minutes=30)
    media = MediaInMemoryUpload(raw, mimetype="message/rfc822")

    imported = (
        gmail.users()
        .messages()
        .import_(userId="me", body={"labelIds": ["INBOX"]}, media_body=media)
        .execute()
    )
    inserted = (
        gmail.users()
        .messages()
        .insert(
            userId="me", body={"raw": base64.urlsafe_b64encode(raw).decode(), "labelIds": ["SENT"]}
        )
        .execute()
    )

    assert mailbox.get(imported["id"]).raw == raw
    # import takes internalDate from the Date header by default, insert from arrival
    assert mailbox.get(imported["id"]).internal_date == _ms(datetime(2026, 1, 5, 9, 30, tzinfo=UTC))
    assert mailbox.get(inserted["id"]).internal_date > mailbox.get(imported["id"]).internal_date


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def test_full_format_gives_the_mime_tree_and_attachments_by_id(alice):
    mailbox, gmail = alice
    raw = make_mail(
        "Invoice", body="See attached.\n", attachments=[("a.pdf", "application/pdf", b"%PDF-1")]
    )
    stored = mailbox.add_message(raw)
    messages = gmail.users().messages()

    full = messages.get(userId="me", id=stored.id).execute()
    text, pdf = full["payload"]["parts"]
    data = (
        messages.attachments()
        .get(userId="me", messageId=stored.id, id=pdf["body"]["attachmentId"])
        .execute()
    )

    assert full["payload"]["mimeType"] == "multipart/mixed"
    assert (text["partId"], text["mimeType"]) == ("0", "text/plain")
    assert base64.urlsafe_b64decode(text["body"]["data"]) == b"See attached.\n"
    assert (pdf["filename"], pdf["body"]["size"]) == ("a.pdf", 6)
    assert base64.urlsafe_b64decode(data["data"]) == b"%PDF-1"


def test_pages_neither_skip_nor_repeat_when_mail_arrives_between_them(alice):
    mailbox, gmail = alice
    old = [mailbox.add_message(make_mail(f"m{i}"), internal_date=1_000 + i) for i in range(4)]
    first = gmail.users().messages().list(userId="me", maxResults=2).execute()

    mailbox.add_message(make_mail("new"), internal_date=9_999)
    second = (
        gmail.users()
        .messages()
        .list(userId="me", maxResults=2, pageToken=first["nextPageToken"])
        .execute()
    )

    listed = [m["id"] for m in first["messages"] + second["messages"]]
    assert listed == [m.id for m in reversed(old)]
    assert "nextPageToken" not in second
