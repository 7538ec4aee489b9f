"""Gmail labels as the store's folders and flags, and Gmail's ids as the store's.

Every label but UNREAD is a folder named by the label's id (display name: the label's name,
its last part for a nested user label, whose parent is the label named by the part before the
last "/"). UNREAD is the read flag (absent: \\Seen), STARRED also \\Flagged, DRAFT also \\Draft.
Every message outside SPAM and TRASH is also in the folder ALL_MAIL (Gmail's "All Mail"), so
an archived message with no label stays in a folder. Labels the account skips
(`sync_settings.skipFolders`, by id or name) are no folder. When the account leaves SPAM and
TRASH out (`GmailSettings.include_spam_trash` off), a message in either is in no folder.

Ids are those Gmail's IMAP shows (smtp_sync's Gmail path uses them too): the API's message id
is X-GM-MSGID in hex, so an account moved from one path to the other keeps its messages.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from emailplatform import topics
from messages import mailbox
from messages.models import Account, Folder

from .client import decode_raw, message_internal_date, raw_as_base64
from .ids import store_id

ALL_MAIL = "ALL_MAIL"
UNREAD, STARRED, DRAFT, SPAM, TRASH = "UNREAD", "STARRED", "DRAFT", "SPAM", "TRASH"
DELIMITER = "/"

ROLES = {
    "INBOX": Folder.Role.INBOX,
    "SENT": Folder.Role.SENT,
    DRAFT: Folder.Role.DRAFTS,
    TRASH: Folder.Role.TRASH,
    SPAM: Folder.Role.SPAM,
    STARRED: Folder.Role.FLAGGED,
    "IMPORTANT": Folder.Role.IMPORTANT,
}
# Labels that are flags, not folders.
FLAG_ONLY = frozenset({UNREAD})


@dataclass(frozen=True)
class LabelMap:
    """Which of the account's labels are folders, and what a message's labels mean."""

    folder_labels: frozenset[str]  # label ids that are folders (not skipped)
    include_spam_trash: bool
    all_mail: bool = True

    def folders(self, label_ids: Iterable[str]) -> list[str]:
        """The folders (names) of a message with these labels; [] when it is not synced."""
        labels = set(label_ids)
        if not self.include_spam_trash and labels & {SPAM, TRASH}:
            return []
        names = sorted(labels & self.folder_labels)
        if self.all_mail and not labels & {SPAM, TRASH}:
            names.append(ALL_MAIL)
        return names

    def labels_that_matter(self) -> set[str]:
        """Labels whose members decide a message's folders and flags."""
        wanted = set(self.folder_labels) | {UNREAD, STARRED, DRAFT}
        if self.include_spam_trash:
            wanted |= {SPAM, TRASH}
        return wanted


def message_item(
    resource: dict[str, Any], folders: list[str], *, include_attachments: bool = True
) -> dict[str, Any]:
    """A Gmail message (format raw) as an EmailNewMessage item, in FOLDERS, under Gmail's ids."""
    internal = message_internal_date(resource)
    gmail_id = store_id(resource["id"])
    raw = resource.get("raw", "")
    encoded = raw_as_base64(raw)
    return topics.new_message_item(
        decode_raw(raw) if encoded is None else b"",
        raw_base64=encoded,
        provider_id=gmail_id,
        thread_id=store_id(resource["threadId"]) if resource.get("threadId") else None,
        server_id=gmail_id,
        labels=folders,
        flags=message_flags(resource.get("labelIds", [])),
        internal_date=internal.isoformat() if internal else None,
        include_attachments=include_attachments,
    )


def message_flags(label_ids: Iterable[str]) -> list[str]:
    labels = set(label_ids)
    flags = [] if UNREAD in labels else ["\\Seen"]
    if STARRED in labels:
        flags.append("\\Flagged")
    if DRAFT in labels:
        flags.append("\\Draft")
    return flags


def labels_sync(
    account: Account,
    labels: list[dict[str, Any]],
    *,
    skip: Collection[str] = (),
    include_spam_trash: bool = False,
) -> LabelMap:
    """Make the account's folders the labels' (created, renamed, nested; those gone removed
    with their locations); return the map of what they mean."""
    skip = set(skip)
    by_name = {label.get("name", label["id"]): label["id"] for label in labels}
    kept = [
        label
        for label in labels
        if label["id"] not in FLAG_ONLY
        and label["id"] not in skip
        and label.get("name") not in skip
        and (include_spam_trash or label["id"] not in (SPAM, TRASH))
    ]
    folders: dict[str, Folder] = {}
    # Parents first: a nested label's name is longer than its parent's.
    for label in sorted(kept, key=lambda item: item.get("name", item["id"]).count(DELIMITER)):
        name = label.get("name") or label["id"]
        user = label.get("type") == "user"
        parent_name, _, leaf = name.rpartition(DELIMITER) if user else ("", "", name)
        parent_id = by_name.get(parent_name) if parent_name else None
        folders[label["id"]] = mailbox.folder_upsert(
            account,
            name=label["id"],
            delimiter=DELIMITER if user else "",
            role=ROLES.get(label["id"], Folder.Role.CUSTOM),
            parent=folders.get(parent_id) if parent_id else None,
            display_name=leaf or name,
        )
    all_mail = ALL_MAIL not in skip
    if all_mail:
        mailbox.folder_upsert(
            account,
            name=ALL_MAIL,
            delimiter="",
            role=Folder.Role.ALL,
            parent=None,
            display_name="All Mail",
        )
    mailbox.folders_remove_missing(account, [*folders, *([ALL_MAIL] if all_mail else [])])
    return LabelMap(
        folder_labels=frozenset(folders),
        include_spam_trash=include_spam_trash,
        all_mail=all_mail,
    )


def account_label_map(account: Account) -> LabelMap:
    """`label_map_stored` with the account's own SPAM/TRASH setting."""
    from .models import GmailSettings

    spam_trash = GmailSettings.objects.filter(account=account).values_list(
        "include_spam_trash", flat=True
    )
    return label_map_stored(account, include_spam_trash=bool(spam_trash.first()))


def label_map_stored(account: Account, *, include_spam_trash: bool) -> LabelMap:
    """The map the account's folders say (as the last `labels_sync` left them): a history
    sync asks Gmail for its labels only when a change names one the store does not have."""
    names = set(Folder.objects.filter(account=account).values_list("name", flat=True))
    return LabelMap(
        folder_labels=frozenset(names - {ALL_MAIL}),
        include_spam_trash=include_spam_trash,
        all_mail=ALL_MAIL in names,
    )
