"""Gmail full sync against the local Gmail API: the store ends equal to the mailbox."""

from __future__ import annotations

from email.parser import BytesHeaderParser

import pytest

from gmail_sync import sync as sync_module
from gmail_sync.client import GmailClient
from gmail_sync.ids import store_id as provider_id
from gmail_sync.labels import ALL_MAIL
from gmail_sync.models import GmailSettings
from gmail_sync.services import gmail_sync_account
from messages.models import Account, Attachment, DeadLetter, Folder, Message, SyncRun
from tests.gmail_sync.factories import assert_store_matches_gmail
from tests.mailfactory import make_mail
from tests.messages.test_ingest_isolation import batch_with_one_bad, rows_fail_for_bad

pytestmark = pytest.mark.django_db(transaction=True)


def mails(prefix: str, count: int, **kwargs) -> list[bytes]:
    return [
        make_mail(f"{prefix} {i}", message_id=f"<{prefix}-{i}@example.org>", minutes=i, **kwargs)
        for i in range(count)
    ]


def subject_of(raw: bytes) -> str:
    return BytesHeaderParser().parsebytes(raw)["Subject"]


def full(gmail_user, **kwargs):
    return gmail_sync_account(gmail_user.account.pk, full=True, **kwargs)


@pytest.fixture
def seeded(gmail_user):
    box = gmail_user.box
    work = box.add_label("Work")
    projects = box.add_label("Work/Projects")
    plan = box.add_message(make_mail("Plan", message_id="<plan@x>"), ["INBOX", "UNREAD"])
    box.add_message(
        make_mail("Re: Plan", message_id="<re-plan@x>", in_reply_to="<plan@x>"),
        ["INBOX", "STARRED", "IMPORTANT", work.id],
    )
    box.add_message(make_mail("Sent", message_id="<sent@x>"), ["SENT"])
    box.add_message(make_mail("Archived", message_id="<archived@x>"), [])
    box.add_message(make_mail("Social", message_id="<social@x>"), ["CATEGORY_SOCIAL", "UNREAD"])
    box.add_message(make_mail("Spam", message_id="<spam@x>"), ["SPAM", "UNREAD"])
    box.add_message(
        make_mail("Spec", message_id="<spec@x>", attachments=[("a.txt", "text/plain", b"x")]),
        [projects.id],
    )
    return {"plan": plan, "work": work, "projects": projects}


def test_labels_become_folders_with_roles_flags_and_threads(gmail_user, seeded):
    report = full(gmail_user)

    assert report.done and report.full and report.new == 6  # all but the spam
    account = gmail_user.account
    assert_store_matches_gmail(account, gmail_user.box)
    folders = {f.name: f for f in Folder.objects.filter(account=account)}
    roles = {name: f.role for name, f in folders.items()}
    assert roles["INBOX"] == Folder.Role.INBOX and roles["SENT"] == Folder.Role.SENT
    assert roles["DRAFT"] == Folder.Role.DRAFTS and roles["STARRED"] == Folder.Role.FLAGGED
    assert roles["IMPORTANT"] == Folder.Role.IMPORTANT and roles[ALL_MAIL] == Folder.Role.ALL
    assert roles["CATEGORY_SOCIAL"] == Folder.Role.CUSTOM
    assert "UNREAD" not in folders and "SPAM" not in folders  # a flag; not synced
    projects = folders[seeded["projects"].id]
    assert projects.display_name == "Projects" and projects.parent == folders[seeded["work"].id]
    # One message under several labels is one message in several folders, without UIDs.
    answer = Message.objects.get(account=account, subject="Re: Plan")
    assert set(answer.locations.values_list("folder__name", "uid")) == {
        ("INBOX", None),
        ("STARRED", None),
        ("IMPORTANT", None),
        (seeded["work"].id, None),
        (ALL_MAIL, None),
    }
    assert answer.is_read and answer.is_flagged
    plan = Message.objects.get(account=account, subject="Plan")
    assert not plan.is_read and plan.thread_id == answer.thread_id
    assert plan.provider_id == provider_id(seeded["plan"].id) == f"gm:{int(seeded['plan'].id, 16)}"
    settings = GmailSettings.objects.get(account=account)
    assert settings.history_id == gmail_user.box.history_id and settings.sync_state == {}
    run = SyncRun.objects.get(account=account)
    assert run.kind == SyncRun.Kind.FULL and run.status == SyncRun.Status.SUCCEEDED
    assert run.progress_total == 7 and run.progress_done == 6


def test_spam_and_trash_when_the_account_asks(gmail_user, seeded):
    GmailSettings.objects.filter(account=gmail_user.account).update(include_spam_trash=True)
    gmail_user.box.trash(seeded["plan"].id)

    full(gmail_user)

    assert_store_matches_gmail(gmail_user.account, gmail_user.box, include_spam_trash=True)
    trashed = Message.objects.get(provider_id=provider_id(seeded["plan"].id))
    assert set(trashed.locations.values_list("folder__role", flat=True)) == {Folder.Role.TRASH}


def test_a_second_full_sync_reconciles_deletions_labels_and_flags(gmail_user, seeded):
    box = gmail_user.box
    full(gmail_user)
    before = dict(Message.objects.values_list("provider_id", "id"))
    ids = {subject_of(m.raw): m.id for m in box.messages.values()}
    box.delete(ids["Sent"])
    box.modify(ids["Plan"], add=["STARRED"], remove=["UNREAD", "INBOX"])
    box.modify(ids["Archived"], add=[seeded["work"].id])
    box.modify(ids["Social"], add=["SPAM"])  # out of the synced mail
    box.modify(ids["Spam"], remove=["SPAM"])  # into it

    report = full(gmail_user)

    assert report.done and report.new == 1  # only the one out of spam is downloaded
    assert_store_matches_gmail(gmail_user.account, box)
    after = dict(Message.objects.values_list("provider_id", "id"))
    assert {pid: before[pid] for pid in after if pid in before} == {
        pid: after[pid] for pid in after if pid in before
    }  # the same rows, no duplicates


def test_an_interrupted_full_sync_resumes_at_its_checkpoint(gmail_user, settings):
    settings.GMAIL_BATCH_SIZE = 5
    box = gmail_user.box
    for raw in mails("m", 23):
        box.add_message(raw, ["INBOX"])
    account_id = gmail_user.account.pk

    first = gmail_sync_account(account_id, full=True, max_messages=10)

    assert not first.done
    state = GmailSettings.objects.get(account_id=account_id)
    assert state.history_id is None and "full" in state.sync_state
    assert Message.objects.filter(account_id=account_id).count() == 10
    box.add_message(make_mail("during", message_id="<during@x>"), ["INBOX"])  # after the start
    gets_before = sum(1 for c in gmail_user.server.calls if c.startswith("GET messages/"))
    while not gmail_sync_account(account_id, full=False, max_messages=10).done:
        pass

    assert_store_matches_gmail(gmail_user.account, box)
    gets = sum(1 for c in gmail_user.server.calls if c.startswith("GET messages/"))
    # Nothing fetched twice: the 14 missing ones, and the labels of "during", which the
    # history sync after the full sync reads (it was added after the full sync began).
    assert gets - gets_before == 24 - 10 + 1
    runs = SyncRun.objects.filter(account_id=account_id).order_by("pk")
    assert runs[0].status == SyncRun.Status.SUCCEEDED and runs[0].progress_done == 10
    assert GmailSettings.objects.get(account_id=account_id).history_id == box.history_id


def test_attachments_left_out_when_asked(gmail_user, seeded):
    full(gmail_user, options={"includeAttachments": False})

    attachment = Attachment.objects.get(message__subject="Spec")
    assert attachment.filename == "a.txt" and not attachment.is_stored


def test_skipped_labels_and_the_date_window(gmail_user, seeded):
    box = gmail_user.box
    old = box.add_message(make_mail("Old", message_id="<old@x>"), ["INBOX"], internal_date=1000)
    options = {"skipFolders": ["Work", "CATEGORY_SOCIAL"], "windowDays": 30}

    full(gmail_user, options=options)

    stored = dict(Message.objects.values_list("subject", "id"))
    assert "Old" not in stored and provider_id(old.id) not in set(
        Message.objects.values_list("provider_id", flat=True)
    )
    folders = set(Folder.objects.filter(account=gmail_user.account).values_list("name", flat=True))
    assert seeded["work"].id not in folders and "CATEGORY_SOCIAL" not in folders
    assert seeded["projects"].id in folders
    answer = Message.objects.get(subject="Re: Plan")
    assert seeded["work"].id not in set(answer.locations.values_list("folder__name", flat=True))


def test_a_message_that_cannot_be_stored_is_dead_lettered_once(gmail_user, monkeypatch):
    box = gmail_user.box
    for raw in batch_with_one_bad():
        box.add_message(raw, ["INBOX"])
    rows_fail_for_bad(monkeypatch)

    report = full(gmail_user)

    assert report.done and report.new == 5
    letter = DeadLetter.objects.get()
    assert sorted(letter.payload["folders"]) == ["ALL_MAIL", "INBOX"]
    account = Account.objects.get(pk=gmail_user.account.pk)
    assert "1 message could not be stored" in account.last_error
    bad = next(m for m in box.messages.values() if b"Bad one" in m.raw)
    assert GmailSettings.objects.get(account=account).sync_state == {
        "deadLetters": [provider_id(bad.id)]
    }
    full(gmail_user)  # a later full sync does not try it again
    assert DeadLetter.objects.count() == 1
    assert Message.objects.filter(account=account).count() == 5


def test_a_checkpoint_whose_page_token_gmail_refuses_lists_from_the_start(gmail_user):
    box = gmail_user.box
    for raw in mails("p", 6):
        box.add_message(raw, ["INBOX"])
    checkpoint = {
        "startHistoryId": box.history_id,
        "pageToken": "no-longer-valid",
        "phase": "fetch",
        "total": 6,
    }
    GmailSettings.objects.filter(account=gmail_user.account).update(sync_state={"full": checkpoint})

    assert gmail_sync_account(gmail_user.account.pk).done

    assert_store_matches_gmail(gmail_user.account, box)


class SmallPages(GmailClient):
    """Gmail's own client, listing 4 ids a page (instead of 500), so that a mailbox of a few
    dozen messages has the pages of a big one."""

    def list_messages(self, **kwargs):
        return super().list_messages(**{**kwargs, "max_results": 4})


def test_checkpoints_every_few_pages_and_resumes_between_them(gmail_user, monkeypatch):
    """Fetching runs ahead of the checkpoint (every CHECKPOINT_PAGES pages); a sync stopped
    between two checkpoints lists those pages again and fetches nothing twice."""
    monkeypatch.setattr(sync_module, "CHECKPOINT_PAGES", 3)
    box = gmail_user.box
    for raw in mails("p", 30):  # 8 pages of 4
        box.add_message(raw, ["INBOX"])
    account_id = gmail_user.account.pk

    def client():
        return SmallPages(gmail_user.refresh_token, box.email)

    first = gmail_sync_account(account_id, full=True, max_messages=17, client=client())

    assert not first.done
    state = GmailSettings.objects.get(account_id=account_id).sync_state["full"]
    assert state["phase"] == "fetch" and state["pageToken"]
    # The checkpoint is page 3's; pages 4 and 5 were fetched and stored past it.
    next_page = client().list_messages(page_token=state["pageToken"]).messages
    assert Message.objects.filter(
        account_id=account_id, provider_id=provider_id(next_page[0]["id"])
    ).exists()
    gets_before = sum(1 for c in gmail_user.server.calls if c.startswith("GET messages/"))
    stored_before = Message.objects.filter(account_id=account_id).count()
    assert 12 < stored_before < 30
    while not gmail_sync_account(account_id, full=False, client=client()).done:
        pass

    assert_store_matches_gmail(gmail_user.account, box)
    gets = sum(1 for c in gmail_user.server.calls if c.startswith("GET messages/"))
    assert gets - gets_before == 30 - stored_before  # nothing fetched twice
