"""Messages: list with filters and search, detail, raw source, attachments, changes."""

import hashlib
from datetime import UTC, datetime

import pytest
from django.core.files.storage import default_storage

from messages.models import (
    Account,
    Attachment,
    ChangeEvent,
    Folder,
    Message,
    MessageLocation,
)
from tests.mailfactory import make_mail

from .conftest import PIXEL, ingest

pytestmark = pytest.mark.django_db


def ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [item["id"] for item in response.json()["results"]]


def test_list_newest_first_with_summaries(api, mailbox):
    response = api.get("/api/messages/")
    assert ids(response) == [
        mailbox.report.pk,
        mailbox.reply.pk,
        mailbox.hello.pk,
        mailbox.archived.pk,
    ]
    report = response.json()["results"][0]
    assert report["subject"] == "Quarterly report"
    assert report["from"] == {"name": "Dave Numbers", "address": "dave@example.org"}
    assert report["to"] == [
        {"name": "Alice", "address": "alice@example.com"},
        {"name": "Erin", "address": "erin@example.com"},
    ]
    assert report["folders"] == ["INBOX"]
    assert report["is_flagged"] and not report["is_read"] and report["has_attachments"]
    assert report["snippet"].startswith("Figures attached.")
    assert report["account"] == mailbox.account.pk and report["thread"] == mailbox.report.thread_id
    assert "text" not in report and "html" not in report


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("unread=true", ["report", "hello"]),
        ("unread=false", ["reply", "archived"]),
        ("unread=1", ["report", "hello"]),
        ("is_read=false", ["report", "hello"]),
        ("is_read=true", ["reply", "archived"]),
        ("is_read=true&unread=false", ["reply", "archived"]),
        ("flagged=true", ["report"]),
        ("is_flagged=true", ["report"]),
        ("is_flagged=false", ["reply", "hello", "archived"]),
        ("has_attachments=true", ["report"]),
        ("has_attachments=false", ["reply", "hello", "archived"]),
        ("from=carol", ["reply"]),
        ("from=Dave%20Numbers", ["report"]),
        ("to=erin", ["report"]),
        ("to=address", []),
        ("subject=lunch", ["reply", "hello"]),
        ("after=2026-01-05T09:30:00Z", ["report", "reply"]),
        ("before=2026-01-05T09:30:00Z", ["hello", "archived"]),
        ("after=2026-01-05T09:00:00Z&before=2026-01-05T09:31:00Z", ["reply", "hello"]),
        ("q=noon", ["reply", "hello"]),
        ("q=figures", ["report"]),
        ("q=carol", ["reply"]),
        ('q="shall we meet"', ["hello"]),
        ("q=lunch%20-noon", []),
        ("q=%20", ["report", "reply", "hello", "archived"]),
    ],
)
def test_filters(api, mailbox, query, expected):
    names = {getattr(mailbox, name).pk: name for name in ("hello", "reply", "report", "archived")}
    assert [names[i] for i in ids(api.get(f"/api/messages/?{query}"))] == expected


def test_filters_by_account_folder_and_thread(api, mailbox):
    assert ids(api.get(f"/api/messages/?folder={mailbox.archive.pk}")) == [mailbox.archived.pk]
    thread = ids(api.get(f"/api/messages/?thread={mailbox.hello.thread_id}"))
    assert thread == [mailbox.reply.pk, mailbox.hello.pk]
    assert len(ids(api.get(f"/api/messages/?account={mailbox.account.pk}"))) == 4
    assert ids(api.get("/api/messages/?account=999999")) == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("unread=maybe", "unread"),
        ("unread=", "unread"),
        ("before=", "before"),
        ("account=abc", "account"),
        ("account=0", "account"),
        ("folder=99999999999999999999", "folder"),
        ("after=yesterday", "after"),
        ("page_size=0", "page_size"),
        ("page_size=201", "page_size"),
        ("cursor=garbage", "cursor"),
        ("subject=a%00b", "subject"),
        ("is_read=true&unread=true", "is_read"),
        ("is_unread=true", "is_unread"),
        ("sort=date", "sort"),
        ("page=2", "page"),
    ],
)
def test_malformed_filters_are_400_naming_the_parameter(api, mailbox, query, field):
    response = api.get(f"/api/messages/?{query}")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/api/accounts/", "status=active"),
        ("/api/folders/", "name=INBOX"),
        ("/api/threads/", "is_read=false"),
        ("/api/changes/", "since=0"),
        ("/api/outbound/", "status=sent"),
        ("/api/messages/{message}/", "include=raw"),
        ("/api/messages/{message}/raw/", "inline=1"),
    ],
)
def test_a_parameter_an_endpoint_does_not_take_is_a_400_naming_it(api, mailbox, path, query):
    """A misspelt filter used to be ignored: the client got everything and no hint."""
    response = api.get(f"{path.format(message=mailbox.hello.pk)}?{query}")
    assert response.status_code == 400, response.content
    name = query.partition("=")[0]
    error = response.json()["error"]
    assert "Unknown query parameter" in error["fields"][name][0]


def test_known_parameters_and_format_still_work_everywhere(api, mailbox):
    paths = ("/api/accounts/", "/api/folders/", "/api/threads/", "/api/changes/", "/api/outbound/")
    for path in paths:
        assert api.get(f"{path}?format=json").status_code == 200, path
    assert api.get("/api/threads/?unread=true&page_size=5").status_code == 200
    assert api.get("/api/changes/?cursor=0&limit=5").status_code == 200


def test_search_ranks_subject_above_sender_above_body(api, account):
    body = ingest(account, make_mail("Weekly notes", body="the zeppelin has landed", minutes=3))
    subject = ingest(account, make_mail("Zeppelin tickets", body="see you there", minutes=1))
    sender = ingest(
        account,
        make_mail("Hi", sender="Zeppelin Club <club@example.org>", body="news", minutes=2),
    )
    ranked = ids(api.get("/api/messages/?q=zeppelin&order=relevance"))
    assert ranked == [subject.pk, sender.pk, body.pk]


def test_search_lists_newest_first_unless_relevance_is_asked(api, account):
    """Like mail clients (and the Gmail API), results come newest first; relevance on demand."""
    older_subject = ingest(account, make_mail("Zeppelin tickets", minutes=1))
    newer_body = ingest(account, make_mail("Notes", body="a zeppelin landed", minutes=5))
    newest_sender = ingest(
        account, make_mail("Hi", sender="Zeppelin Club <club@example.org>", minutes=9)
    )
    ingest(account, make_mail("Unrelated", minutes=7))
    newest = [newest_sender.pk, newer_body.pk, older_subject.pk]
    assert ids(api.get("/api/messages/?q=zeppelin")) == newest
    assert ids(api.get("/api/messages/?q=zeppelin&order=newest")) == newest
    relevance = ids(api.get("/api/messages/?q=zeppelin&order=relevance"))
    assert relevance == [older_subject.pk, newest_sender.pk, newer_body.pk]
    # Pages of a search walk every match once, in the same order.
    first = api.get("/api/messages/?q=zeppelin&page_size=2").json()
    second = api.get(first["next"]).json()
    assert [m["id"] for m in first["results"] + second["results"]] == newest


@pytest.mark.parametrize("query", ["order=relevance", "order=newest", "q=x&order=best"])
def test_a_search_order_needs_a_search_and_a_known_value(api, account, query):
    response = api.get(f"/api/messages/?{query}")
    assert response.status_code == 400
    assert "order" in response.json()["error"]["fields"]


def test_a_thread_list_entry_is_the_threads_output_field_for_field(api, account):
    """As for messages: the thread list builds its entries without DRF's serializer."""
    from messages.api.serializers import ThreadOutput
    from messages.selectors import thread_list

    first = ingest(account, make_mail("Plans", message_id="<p1@x>", minutes=1))
    ingest(
        account,
        make_mail("Re: Plans", message_id="<p2@x>", in_reply_to="<p1@x>", sender="Carol <c@x>"),
    )
    ingest(account, make_mail("Alone", message_id="<a1@x>", minutes=2))
    Message.objects.filter(pk=first.pk).update(is_read=True)
    listed = api.get("/api/threads/").json()["results"]
    assert len(listed) == 2
    for entry in listed:
        thread = thread_list(user=account.owner).get(pk=entry["id"])
        assert entry == ThreadOutput(thread).data
    plans = next(entry for entry in listed if entry["message_count"] == 2)
    assert plans["unread_count"] == 1 and len(plans["participants"]) == 2


def test_a_list_entry_is_the_messages_summary_field_for_field(api, account):
    """The list builds its entries without DRF's serializer (speed): they must be what the
    documented MessageSummaryOutput makes of the same message, odd stored values included."""
    from messages.api.serializers import MessageSummaryOutput

    plain = ingest(account, make_mail("Plain", minutes=1))
    dateless = ingest(account, make_mail("No date", minutes=2))
    odd = ingest(account, make_mail("Odd people", minutes=3), folder="Archive")
    Message.objects.filter(pk=dateless.pk).update(date=None, cc=[{"address": "x@example.org"}])
    Message.objects.filter(pk=odd.pk).update(to={"not": "a list"}, cc=["text", {"name": None}])
    archive = Folder.objects.get(account=account, name="Archive")
    MessageLocation.objects.create(message=plain, folder=archive, uid=99, sort_date=plain.sort_date)
    listed = {m["id"]: m for m in api.get("/api/messages/").json()["results"]}
    for message in Message.objects.filter(pk__in=[plain.pk, dateless.pk, odd.pk]):
        assert listed[message.pk] == MessageSummaryOutput(message).data
    assert listed[plain.pk]["folders"] == ["Archive", "INBOX"]
    assert listed[dateless.pk]["date"] is None
    assert listed[odd.pk]["to"] == [] and listed[odd.pk]["cc"] == [{"name": "", "address": ""}]


def test_search_vector_is_computed_on_insert_and_update(account):
    message = ingest(account, make_mail("Kangaroo", body="marsupial facts"))
    stored = Message.objects.values_list("search_vector", flat=True).get(pk=message.pk)
    assert "'kangaroo':1A" in stored and "'marsupial':" in stored and "C" in stored
    Message.objects.filter(pk=message.pk).update(subject="Wombat")
    assert "'wombat':1A" in Message.objects.values_list("search_vector", flat=True).get(
        pk=message.pk
    )


def explain(user_id: int, query) -> str:
    from django.db import connection

    from messages.message_page import message_page_sql

    sql, params = message_page_sql(user_id=user_id, query=query)
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {sql}", params)
        return "\n".join(row[0] for row in cursor.fetchall())


def test_an_accounts_search_reads_only_that_accounts_matches(account):
    from django.db import connection

    from messages.message_page import MessageQuery

    ingest(account, make_mail("Kangaroo"))
    # Tiny tables: PostgreSQL would read the account's few rows through a btree. Without those
    # (dropped in the test's transaction), the GIN index must take the account condition too.
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("ALTER TABLE mailstore_message DROP CONSTRAINT message_unique_provider_id")
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'mailstore_message'"
            " AND indexdef LIKE '%%USING btree (account_id%%'"
        )
        for (name,) in cursor.fetchall():
            cursor.execute(f'DROP INDEX "{name}"')
    plan = explain(account.owner_id, MessageQuery(account=account.pk, search="kangaroo"))
    assert "message_account_search" in plan and "Index Cond: ((account_id = " in plan, plan


def test_very_long_bodies_are_indexed_up_to_the_limit(api, account):
    filler = "lorem " * 30_000
    message = ingest(account, make_mail("Long", body=f"aardvark {filler} unreachable"))
    assert ids(api.get("/api/messages/?q=aardvark")) == [message.pk]
    assert ids(api.get("/api/messages/?q=unreachable")) == []


def test_detail_has_headers_text_and_attachments(api, mailbox):
    response = api.get(f"/api/messages/{mailbox.report.pk}/")
    assert response.status_code == 200
    body = response.json()
    assert body["message_id"] == "<report@x>"
    assert body["date"] == "2026-01-05T10:00:00Z"
    assert body["text"] == "Figures attached.\n"
    assert body["html"] == ""
    [attachment] = body["attachments"]
    assert attachment["filename"] == "q.pdf" and attachment["content_type"] == "application/pdf"
    assert attachment["stored"] is True
    assert attachment["download_url"] == (
        f"http://testserver/api/attachments/{attachment['id']}/download/"
    )
    assert body["raw_url"] == f"http://testserver/api/messages/{mailbox.report.pk}/raw/"
    assert "raw_headers" not in body
    headers = api.get(f"/api/messages/{mailbox.report.pk}/?raw_headers=true").json()["raw_headers"]
    assert ["Subject", "Quarterly report"] in headers
    assert ["From", "Dave Numbers <dave@example.org>"] in headers


def test_raw_download_is_the_exact_bytes(api, account):
    raw = make_mail("Exact", body="bytes \u00e9\r\n") + b"\r\n-- trailing junk \xff\r\n"
    message = ingest(account, raw)
    response = api.get(f"/api/messages/{message.pk}/raw/")
    assert response.status_code == 200
    assert response["Content-Type"] == "message/rfc822"
    assert response["Content-Disposition"] == f'attachment; filename="message-{message.pk}.eml"'
    assert b"".join(response.streaming_content) == raw


def test_raw_download_errors_are_json_whatever_is_accepted(api):
    response = api.get("/api/messages/12345/raw/", HTTP_ACCEPT="message/rfc822")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_attachment_download(api, mailbox):
    attachment = Attachment.objects.get(message=mailbox.report)
    response = api.get(f"/api/attachments/{attachment.pk}/download/")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"%PDF-1.4 quarterly"
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"].startswith("attachment;")
    assert 'filename="q.pdf"' in response["Content-Disposition"]
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"].startswith("sandbox")


def test_attachment_not_stored_is_extracted_from_the_raw_message_on_demand(api, account):
    payload = b"\x00\x01 binary payload \xfe\xff" * 10
    raw = make_mail("Lazy", attachments=[("data.bin", "application/octet-stream", payload)])
    message = ingest(account, raw, include_attachments=False)
    attachment = Attachment.objects.get(message=message)
    assert not attachment.file
    assert api.get(f"/api/messages/{message.pk}/").json()["attachments"][0]["stored"] is False

    response = api.get(f"/api/attachments/{attachment.pk}/download/")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == payload
    attachment.refresh_from_db()
    assert attachment.file.name == f"attachments/{attachment.sha256[:2]}/{attachment.sha256}"
    assert attachment.sha256 == hashlib.sha256(payload).hexdigest()
    assert default_storage.exists(attachment.file.name)
    assert api.get(f"/api/messages/{message.pk}/").json()["attachments"][0]["stored"] is True


def test_attachment_file_lost_from_storage_is_extracted_again(api, mailbox):
    attachment = Attachment.objects.get(message=mailbox.report)
    default_storage.delete(attachment.file.name)
    response = api.get(f"/api/attachments/{attachment.pk}/download/")
    assert b"".join(response.streaming_content) == b"%PDF-1.4 quarterly"


def test_inline_image_cid_is_rewritten_to_its_download(api, account):
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.org", "b@example.org", "Logo"
    msg.set_content("text")
    msg.add_alternative('<p>Logo: <img src="cid:logo.123@example.org" alt="logo"></p>', "html")
    msg.get_payload()[1].add_related(PIXEL, "image", "gif", cid="<logo.123@example.org>")
    message = ingest(account, bytes(msg))
    inline = Attachment.objects.get(message=message)
    assert inline.content_id == "logo.123@example.org"
    html = api.get(f"/api/messages/{message.pk}/").json()["html"]
    url = f"http://testserver/api/attachments/{inline.pk}/download/"
    assert f'<img src="{url}" alt="logo">' in html
    image = api.get(url)
    assert image.status_code == 200 and b"".join(image.streaming_content) == PIXEL


def test_remote_images_are_blocked_unless_asked_for(api, account):
    html = (
        '<p>Hi</p><img src="https://tracker.example/pixel.gif?u=alice">'
        '<img src="http://cdn.example/logo.png"><img src="//cdn.example/x.png">'
        '<div style="background: url(https://tracker.example/bg.png); color: red">x</div>'
    )
    message = ingest(account, make_mail("Newsletter", html=html))
    blocked = api.get(f"/api/messages/{message.pk}/").json()
    assert "tracker.example" not in blocked["html"] and "cdn.example" not in blocked["html"]
    assert blocked["remote_images_blocked"] == 2
    assert '<div style="color: red">x</div>' in blocked["html"]

    allowed = api.get(f"/api/messages/{message.pk}/?remote_images=1").json()
    assert '<img src="https://tracker.example/pixel.gif?u=alice">' in allowed["html"]
    assert '<img src="http://cdn.example/logo.png">' in allowed["html"]
    assert "bg.png" not in allowed["html"], "CSS url() is never allowed"
    assert allowed["remote_images_blocked"] == 0
    assert api.get(f"/api/messages/{message.pk}/?remote_images=perhaps").status_code == 400


def test_mark_read_flag_and_move_in_a_local_account(api, mailbox):
    url = f"/api/messages/{mailbox.hello.pk}/"
    before = ChangeEvent.objects.count()
    response = api.patch(url, {"is_read": True, "is_flagged": True}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["is_read"] and response.json()["is_flagged"]
    mailbox.hello.refresh_from_db()
    assert mailbox.hello.is_read and mailbox.hello.is_flagged
    events = ChangeEvent.objects.order_by("id")[before:]
    assert {(e.object_type, e.kind, e.object_id) for e in events} == {
        ("message", "updated", mailbox.hello.pk),
        ("thread", "updated", mailbox.hello.thread_id),
    }

    moved = api.patch(url, {"folder": "Archive"}, format="json")
    assert moved.json()["folders"] == ["Archive"]
    trashed = api.patch(url, {"trash": True}, format="json")
    assert trashed.json()["folders"] == ["Trash"]
    assert Folder.objects.get(account=mailbox.account, name="Trash").role == "trash"
    assert MessageLocation.objects.filter(message=mailbox.hello).count() == 1


def test_restore_from_trash_and_labels_in_a_local_account(api, mailbox):
    url = f"/api/messages/{mailbox.hello.pk}/"
    api.patch(url, {"trash": True}, format="json")

    restored = api.patch(url, {"trash": False}, format="json")
    assert restored.json()["folders"] == ["INBOX"]

    labelled = api.patch(url, {"labels_add": ["Archive", "INBOX"]}, format="json")
    assert labelled.json()["folders"] == ["Archive", "INBOX"]
    assert MessageLocation.objects.filter(message=mailbox.hello).count() == 2
    unlabelled = api.patch(url, {"labels_remove": ["INBOX"]}, format="json")
    assert unlabelled.json()["folders"] == ["Archive"]
    unknown = api.patch(url, {"labels_add": ["Nowhere"]}, format="json")
    assert unknown.status_code == 400
    assert "labels_add" in unknown.json()["error"]["fields"]
    both = api.patch(url, {"labels_add": ["INBOX"], "labels_remove": ["INBOX"]}, format="json")
    assert "labels_remove" in both.json()["error"]["fields"]


def test_patch_validation(api, mailbox):
    url = f"/api/messages/{mailbox.hello.pk}/"
    empty = api.patch(url, {}, format="json")
    assert empty.status_code == 400
    assert "non_field_errors" in empty.json()["error"]["fields"]
    unknown = api.patch(url, {"folder": "Nowhere"}, format="json")
    assert unknown.json()["error"]["fields"] == {
        "folder": ["This account has no folder named 'Nowhere'."]
    }
    both = api.patch(url, {"folder": "Archive", "trash": True}, format="json")
    assert "trash" in both.json()["error"]["fields"]
    wrong_type = api.patch(url, {"is_read": "perhaps"}, format="json")
    assert "is_read" in wrong_type.json()["error"]["fields"]


def test_folders_with_counts(api, mailbox):
    duplicate = make_mail("Lunch on Friday", message_id="<hello@x>", body="Shall we meet at noon?")
    ingest(mailbox.account, duplicate, uid=9)  # a second copy of "hello" in INBOX
    response = api.get(f"/api/accounts/{mailbox.account.pk}/folders/")
    assert response.status_code == 200
    folders = {f["name"]: f for f in response.json()["results"]}
    assert folders["INBOX"]["total"] == 3 and folders["INBOX"]["unread"] == 2
    assert folders["Archive"]["total"] == 1 and folders["Archive"]["unread"] == 0
    assert folders["INBOX"]["role"] == "inbox" and folders["Archive"]["role"] == "archive"
    assert api.get("/api/folders/").json()["results"] == response.json()["results"]
    only_inbox = api.get("/api/folders/?role=inbox").json()["results"]
    assert [f["name"] for f in only_inbox] == ["INBOX"]


def test_an_empty_or_unknown_role_is_a_400(api, mailbox):
    for value in ("", "nonsense"):
        answer = api.get(f"/api/folders/?role={value}")
        assert answer.status_code == 400, value
        assert "role" in answer.json()["error"]["fields"]


def test_folder_counts_take_one_query(api, mailbox, django_assert_max_num_queries):
    for i in range(5):
        Folder.objects.create(account=mailbox.account, name=f"F{i}", display_name=f"F{i}")
    with django_assert_max_num_queries(4):
        assert len(api.get("/api/folders/").json()["results"]) == 7


def test_threads_newest_activity_first(api, mailbox):
    response = api.get("/api/threads/")
    assert response.status_code == 200
    threads = response.json()["results"]
    assert [t["id"] for t in threads] == [
        mailbox.report.thread_id,
        mailbox.hello.thread_id,
        mailbox.archived.thread_id,
    ]
    lunch = threads[1]
    assert lunch["subject"] == "Lunch on Friday"
    assert lunch["message_count"] == 2 and lunch["unread_count"] == 1
    assert lunch["snippet"] == "Noon works."
    assert lunch["participants"] == [
        {"name": "Bob Sender", "address": "bob@example.org"},
        {"name": "Carol Reply", "address": "carol@example.net"},
    ]
    assert lunch["last_message_at"] == "2026-01-05T09:30:00Z"
    unread = [t["id"] for t in api.get("/api/threads/?unread=true").json()["results"]]
    assert unread == [mailbox.report.thread_id, mailbox.hello.thread_id]
    in_archive = api.get(f"/api/threads/?folder={mailbox.archive.pk}").json()["results"]
    assert [t["id"] for t in in_archive] == [mailbox.archived.thread_id]


def test_thread_list_queries_do_not_grow_with_threads(api, account, django_assert_max_num_queries):
    for i in range(20):
        ingest(account, make_mail(f"T{i}", message_id=f"<t{i}@x>", minutes=i))
    with django_assert_max_num_queries(3):
        assert len(api.get("/api/threads/").json()["results"]) == 20


def test_thread_detail_has_its_messages_in_order(api, mailbox):
    response = api.get(f"/api/threads/{mailbox.hello.thread_id}/")
    assert response.status_code == 200
    body = response.json()
    assert [m["id"] for m in body["messages"]] == [mailbox.hello.pk, mailbox.reply.pk]
    assert body["messages"][1]["from"]["address"] == "carol@example.net"


def test_pagination_walks_every_message_once_across_ties(api, account):
    same_minute = [
        ingest(account, make_mail(f"Tie {i}", message_id=f"<tie{i}@x>")) for i in range(7)
    ]
    later = ingest(account, make_mail("Later", minutes=5))
    seen, url, pages = [], "/api/messages/?page_size=3", 0
    while url:
        page = api.get(url).json()
        seen += [m["id"] for m in page["results"]]
        url, pages = page["next"], pages + 1
    assert pages == 3
    assert seen == [later.pk] + sorted((m.pk for m in same_minute), reverse=True)

    second = api.get(api.get("/api/messages/?page_size=3").json()["next"]).json()
    back = api.get(second["previous"]).json()
    assert [m["id"] for m in back["results"]] == seen[:3]
    assert back["previous"] is None


def test_search_pages_keep_the_rank_order(api, account):
    for i in range(5):
        ingest(account, make_mail(f"Report {i}", body="quarterly " * (i + 1), minutes=i))
    first = api.get("/api/messages/?q=quarterly&page_size=2").json()
    rest = api.get(first["next"]).json()
    last = api.get(rest["next"]).json()
    walked = [m["id"] for page in (first, rest, last) for m in page["results"]]
    assert walked == ids(api.get("/api/messages/?q=quarterly"))
    assert len(set(walked)) == 5 and last["next"] is None


def test_folder_list_pages_newest_first_each_message_once(api, account):
    same_minute = [
        ingest(account, make_mail(f"Tie {i}", message_id=f"<tie{i}@x>")) for i in range(5)
    ]
    later = ingest(account, make_mail("Later", minutes=5))
    ingest(account, make_mail("Elsewhere", message_id="<else@x>", minutes=9), folder="Archive")
    inbox = Folder.objects.get(account=account, name="INBOX")
    # The same message under a second UID in the folder (a copy of it appended there).
    twice = same_minute[2]
    MessageLocation.objects.create(message=twice, folder=inbox, uid=999, sort_date=twice.sort_date)
    expected = [later.pk] + sorted((m.pk for m in same_minute), reverse=True)

    walked, page = [], api.get(f"/api/messages/?folder={inbox.pk}&page_size=2").json()
    while True:
        walked += [m["id"] for m in page["results"]]
        if not page["next"]:
            break
        page = api.get(page["next"]).json()
    assert walked == expected
    back = api.get(page["previous"]).json()
    assert [m["id"] for m in back["results"]] == expected[2:4]
    assert ids(api.get(f"/api/messages/?folder={inbox.pk}")) == expected


def test_folder_search_ranks_within_the_folder(api, account):
    body = ingest(account, make_mail("Notes", body="wombat sighting", minutes=1))
    subject = ingest(account, make_mail("Wombat news", message_id="<w@x>"))
    ingest(account, make_mail("Wombat archive", message_id="<a@x>"), folder="Archive")
    inbox = Folder.objects.get(account=account, name="INBOX")
    query = f"folder={inbox.pk}&q=wombat&order=relevance"
    assert ids(api.get(f"/api/messages/?{query}")) == [subject.pk, body.pk]


def test_folder_list_walks_the_folder_index_without_sorting(account):
    from django.db import connection

    from messages.message_page import MessageQuery

    ingest(account, make_mail("One"))
    inbox = Folder.objects.get(account=account, name="INBOX")
    # Tiny tables: rule out the plans PostgreSQL prefers there; what is left must not sort.
    with connection.cursor() as cursor:
        for method in ("seqscan", "bitmapscan", "sort", "incremental_sort"):
            cursor.execute(f"SET LOCAL enable_{method} = off")
    plan = explain(account.owner_id, MessageQuery(folder=inbox.pk))
    # (The page's rows are not sorted; each row's few folder names are, in their subplan.)
    page_plan = plan.split("SubPlan")[0]
    assert "location_folder_newest_page" in page_plan and "Sort" not in page_plan, plan


def test_sort_dates_survive_the_cursor_to_the_microsecond(api, account):
    a = ingest(account, make_mail("a"))
    b = ingest(account, make_mail("b"))
    Message.objects.filter(pk=a.pk).update(sort_date=datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=UTC))
    Message.objects.filter(pk=b.pk).update(sort_date=datetime(2026, 1, 1, 0, 0, 0, 2, tzinfo=UTC))
    first = api.get("/api/messages/?page_size=1").json()
    assert [m["id"] for m in first["results"]] == [b.pk]
    assert [m["id"] for m in api.get(first["next"]).json()["results"]] == [a.pk]


def test_every_list_pages_with_next_and_previous(api, mailbox, user):
    other = Account.objects.create(owner=user, provider="local", email_address="o@example.com")
    ingest(other, make_mail("Elsewhere", message_id="<else@x>"), folder="Work")
    for url in ("/api/folders/", "/api/accounts/", "/api/threads/", "/api/messages/"):
        everything = [item["id"] for item in api.get(url).json()["results"]]
        walked, page = [], api.get(f"{url}?page_size=1").json()
        while True:
            walked += [item["id"] for item in page["results"]]
            if not page["next"]:
                break
            page = api.get(page["next"]).json()
        assert walked == everything and len(walked) >= 2, url
        back = api.get(page["previous"]).json()
        assert [item["id"] for item in back["results"]] == everything[-2:-1], url
