"""Two-way: a client's change to a message applied on Gmail, and the store set to Gmail's answer.

Gmail answers modify, trash and untrash with the message's new labelIds, so the store takes
them at once (`mailbox.message_folders_set`, with the changes feed) instead of waiting for the next
history sync, which then finds nothing to change.

The change keys are the store's (`messages.services.message_change`): `read`, `flagged`,
`folder` (a label id: Gmail's "move" adds it and takes INBOX, SPAM and TRASH away), `trash`
(true: trash, false: untrash), `labels_add` / `labels_remove` (label ids).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from messages.mailbox import message_folders_set
from messages.models import Message

from . import ids
from .client import GmailClient
from .connection import gmail_client_for
from .labels import account_label_map, message_flags

KNOWN_KEYS = frozenset({"read", "flagged", "folder", "trash", "labels_add", "labels_remove"})


class ChangeError(ValueError):
    """The change cannot be applied as asked (unknown key, a message not from Gmail)."""


@dataclass
class LabelEdit:
    """One change as Gmail calls: trash/untrash first (None: neither), then one modify."""

    trash: bool | None = None
    add: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)


def label_edit(change: dict[str, Any], current: Collection[str] = ()) -> LabelEdit:
    """CHANGE as Gmail calls, for a message now under the labels CURRENT (as stored). A move
    takes the message out of the inbox and the spam (modify) and out of the trash (untrash,
    Gmail's own way out of it) into the folder."""
    unknown = set(change) - KNOWN_KEYS
    if unknown:
        raise ChangeError(f"unknown change field(s): {', '.join(sorted(unknown))}")
    edit = LabelEdit()
    add: list[str] = list(change.get("labels_add") or [])
    remove: list[str] = list(change.get("labels_remove") or [])
    if "read" in change:
        (remove if change["read"] else add).append("UNREAD")
    if "flagged" in change:
        (add if change["flagged"] else remove).append("STARRED")
    folder = change.get("folder")
    if folder == "TRASH":
        edit.trash = True
    elif folder:
        add.append(folder)
        remove += [label for label in ("INBOX", "SPAM") if label != folder]
        if "TRASH" in current:
            edit.trash = False
    if "trash" in change:
        edit.trash = bool(change["trash"])
    edit.add = list(dict.fromkeys(add))
    edit.remove = [label for label in dict.fromkeys(remove) if label not in edit.add]
    return edit


def gmail_message_change(
    message_id: int,
    change: dict[str, Any],
    *,
    client_factory: Callable[..., GmailClient] = gmail_client_for,
) -> list[str]:
    """Apply CHANGE to the stored message MESSAGE_ID on Gmail, then set the store to Gmail's
    answer; returns the message's labelIds. Raises Message.DoesNotExist, ChangeError and the
    GmailClient's errors (GmailNotFound: the message is gone from Gmail)."""
    message = Message.objects.select_related("account").get(pk=message_id)
    try:
        gmail_id = ids.api_id(message.provider_id)
    except ValueError as exc:
        raise ChangeError(str(exc)) from exc
    current = set(message.locations.values_list("folder__name", flat=True))
    edit = label_edit(change, current)
    client = client_factory(message.account)
    answer: dict[str, Any] | None = None
    if edit.trash is True:
        answer = client.trash(gmail_id)
    elif edit.trash is False:
        answer = client.untrash(gmail_id)
    if edit.add or edit.remove:
        answer = client.modify(gmail_id, add=edit.add, remove=edit.remove)
    if answer is None:
        answer = client.get_message(gmail_id, fmt="minimal")
    labels = list(answer.get("labelIds") or [])
    labels_store(message, labels)
    return labels


def labels_store(message: Message, labels: list[str]) -> None:
    """The store takes Gmail's answer as a sync would (the account's label map: skipped labels,
    SPAM and TRASH as its settings say, All Mail)."""
    account = message.account
    label_map = account_label_map(account)
    message_folders_set(
        account,
        {message.provider_id: label_map.folders(labels)},
        flags={message.provider_id: message_flags(labels)},
    )
