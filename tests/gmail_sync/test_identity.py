"""One identity for both Gmail paths: messages synced over IMAP (X-GM-EXT-1) and then through
the Gmail API are the same Message rows, so an account moved between the paths does not
duplicate its mail."""

from __future__ import annotations

import pytest

from gmail_sync.models import GmailSettings
from gmail_sync.services import gmail_sync_account
from messages.models import Account, Message
from smtp_sync.sync import ImapAccountSync
from tests.gmail_imap_fake import GmailImapFake, GmailMessage
from tests.gmail_sync.factories import assert_store_matches_gmail
from tests.imap_fixtures import account_for
from tests.mailfactory import make_mail

pytestmark = pytest.mark.django_db(transaction=True)

ALL_MAIL = "[Gmail]/All Mail"


@pytest.fixture
def gmail_imap(dovecot):
    host, port, _ = dovecot
    fake = GmailImapFake((host, port))
    yield fake
    fake.close()


def crlf(raw: bytes) -> bytes:
    return raw.replace(b"\n", b"\r\n")  # as IMAP and Gmail serve mail


def test_the_imap_path_and_the_api_path_make_the_same_rows(user, imap_user, gmail_imap, gmail_user):
    box = gmail_user.box
    work = box.add_label("Work")
    plan = box.add_message(crlf(make_mail("Plan", message_id="<plan@x>")), ["INBOX", work.id])
    answer = box.add_message(
        crlf(make_mail("Re: Plan", message_id="<re@x>", in_reply_to="<plan@x>")), ["INBOX"]
    )
    archived = box.add_message(crlf(make_mail("Old", message_id="<old@x>")), [])
    with imap_user.client() as c:
        for folder in ("Work", "[Gmail]", ALL_MAIL):
            c.create_folder(folder)
    imap_user.append("INBOX", plan.raw, answer.raw)
    imap_user.append("Work", plan.raw)
    imap_user.append(ALL_MAIL, plan.raw, answer.raw, archived.raw)
    gm = {m.id: GmailMessage(int(m.id, 16), int(m.thread_id, 16)) for m in (plan, answer, archived)}
    for folder, uid, message in [
        ("INBOX", 1, plan),
        ("INBOX", 2, answer),
        ("Work", 1, plan),
        (ALL_MAIL, 1, plan),
        (ALL_MAIL, 2, answer),
        (ALL_MAIL, 3, archived),
    ]:
        gmail_imap.place(folder, uid, gm[message.id])
    imap_account = account_for(user, imap_user, port=gmail_imap.port)
    assert ImapAccountSync(imap_account).sync(full=True).done
    by_imap = dict(Message.objects.filter(account=imap_account).values_list("provider_id", "id"))
    assert len(by_imap) == 3

    # The account moves to the Gmail API.
    Account.objects.filter(pk=imap_account.pk).update(provider="gmail")
    moved = Account.objects.get(pk=imap_account.pk)
    moved.set_credentials({"refresh_token": gmail_user.refresh_token})
    moved.save()
    GmailSettings.objects.create(account=moved)
    report = gmail_sync_account(moved.pk, full=True)

    assert report.done and report.new == 0  # nothing downloaded again
    by_api = dict(Message.objects.filter(account=moved).values_list("provider_id", "id"))
    assert by_api == by_imap
    assert_store_matches_gmail(moved, box)
