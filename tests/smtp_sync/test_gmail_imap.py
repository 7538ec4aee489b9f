"""Gmail over IMAP (X-GM-EXT-1), against Dovecot behind a fake of Gmail's extension."""

import pytest

from messages.models import Account, Message
from smtp_sync.sync import ImapAccountSync
from tests.gmail_imap_fake import GmailImapFake, GmailMessage
from tests.imap_fixtures import account_for
from tests.mailfactory import make_mail

pytestmark = pytest.mark.django_db(transaction=True)

ALL_MAIL = "[Gmail]/All Mail"


@pytest.fixture
def gmail(dovecot):
    host, port, _ = dovecot
    fake = GmailImapFake((host, port))
    yield fake
    fake.close()


@pytest.fixture
def gmail_account(user, imap_user, gmail) -> Account:
    return account_for(user, imap_user, port=gmail.port)


def test_a_message_under_several_labels_is_one_message_with_gmail_ids(
    gmail_account, imap_user, gmail
):
    plan = "<plan@example.org>"
    first = make_mail("Plan", message_id=plan)
    # Gmail threads by its own rules: the answer it filed apart stays apart, and a mail with
    # no header link to the plan is in its thread, because X-GM-THRID says so.
    answer = make_mail("Re: Plan", message_id="<answer@example.org>", in_reply_to=plan)
    related = make_mail("Plan, part two", message_id="<part2@example.org>")
    with imap_user.client() as c:
        for folder in ("Work", "[Gmail]", ALL_MAIL):
            c.create_folder(folder)
    imap_user.append("INBOX", first, related)  # UIDs 1, 2
    imap_user.append("Work", first)  # UID 1
    imap_user.append(ALL_MAIL, first, answer, related)  # UIDs 1, 2, 3
    plan_mail = GmailMessage(1001, 5001, ("\\Inbox", "Work"))
    answer_mail = GmailMessage(1002, 5002)
    related_mail = GmailMessage(1003, 5001, ("\\Inbox",))
    for folder, uid, message in [
        ("INBOX", 1, plan_mail),
        ("INBOX", 2, related_mail),
        ("Work", 1, plan_mail),
        (ALL_MAIL, 1, plan_mail),
        (ALL_MAIL, 2, answer_mail),
        (ALL_MAIL, 3, related_mail),
    ]:
        gmail.place(folder, uid, message)

    report = ImapAccountSync(gmail_account).sync(full=True)

    assert report.done and report.new == 3
    assert "X-GM-EXT-1" in gmail_account.imap_settings.capabilities
    messages = {m.provider_id: m for m in Message.objects.filter(account=gmail_account)}
    assert set(messages) == {"gm:1001", "gm:1002", "gm:1003"}
    plan_row = messages["gm:1001"]
    assert plan_row.subject == "Plan"
    assert sorted(plan_row.locations.values_list("folder__name", flat=True)) == sorted(
        ["INBOX", "Work", ALL_MAIL]
    )
    assert messages["gm:1003"].thread_id == plan_row.thread_id
    assert messages["gm:1002"].thread_id != plan_row.thread_id
    assert plan_row.thread.provider_thread_id == "gm:5001"
