"""Gmail accounts for the tests, created directly (the OAuth flow is not what they test), and
the check that the store equals the fake mailbox."""

from __future__ import annotations

from gmail_sync.ids import store_id
from gmail_sync.labels import ALL_MAIL
from gmail_sync.models import GmailSettings
from messages.models import Account, Message, MessageLocation, RawMessage


def gmail_account_create(owner, refresh_token: str, email: str, **settings) -> Account:
    account = Account.objects.create(owner=owner, provider="gmail", email_address=email)
    account.set_credentials({"refresh_token": refresh_token})
    account.save()
    GmailSettings.objects.create(account=account, **settings)
    return account


# Gmail's IMAP ids (X-GM-MSGID, X-GM-THRID) are the API's hex ids, in decimal.
gm = store_id


def expected_folders(label_ids, *, include_spam_trash: bool = False) -> set[str]:
    labels = set(label_ids)
    if not include_spam_trash and labels & {"SPAM", "TRASH"}:
        return set()
    folders = labels - {"UNREAD"}
    if not labels & {"SPAM", "TRASH"}:
        folders.add(ALL_MAIL)
    return folders


def assert_store_matches_gmail(account: Account, box, *, include_spam_trash: bool = False):
    """Every message Gmail has (SPAM/TRASH as the account says) is stored once, under its
    Gmail ids, in its labels' folders, with its flags, thread and exact bytes; nothing else."""
    wanted = {
        gm(m.id): m
        for m in box.messages.values()
        if expected_folders(m.label_ids, include_spam_trash=include_spam_trash)
    }
    stored = {m.provider_id: m for m in Message.objects.filter(account=account)}
    assert set(stored) == set(wanted)
    for pid, gmail in wanted.items():
        message = stored[pid]
        folders = set(
            MessageLocation.objects.filter(message=message).values_list("folder__name", flat=True)
        )
        assert folders == expected_folders(gmail.label_ids, include_spam_trash=include_spam_trash)
        labels = set(gmail.label_ids)
        flags = {
            "is_read": "UNREAD" not in labels,
            "is_flagged": "STARRED" in labels,
            "is_draft": "DRAFT" in labels,
        }
        assert {k: getattr(message, k) for k in flags} == flags, gmail.label_ids
        assert message.thread.provider_thread_id == gm(gmail.thread_id)
        assert message.server_ids == [pid]
        assert RawMessage.objects.get(message=message).content() == gmail.raw
