"""Folder roles and lookup."""

from __future__ import annotations

from collections.abc import Iterable

from .events import events_record
from .models import Account, Folder

_ROLE_BY_NAME = {
    "inbox": Folder.Role.INBOX,
    "sent": Folder.Role.SENT,
    "sent items": Folder.Role.SENT,
    "sent messages": Folder.Role.SENT,
    "sent mail": Folder.Role.SENT,
    "drafts": Folder.Role.DRAFTS,
    "draft": Folder.Role.DRAFTS,
    "trash": Folder.Role.TRASH,
    "deleted items": Folder.Role.TRASH,
    "deleted messages": Folder.Role.TRASH,
    "bin": Folder.Role.TRASH,
    "spam": Folder.Role.SPAM,
    "junk": Folder.Role.SPAM,
    "junk e-mail": Folder.Role.SPAM,
    "bulk mail": Folder.Role.SPAM,
    "archive": Folder.Role.ARCHIVE,
    "archives": Folder.Role.ARCHIVE,
    "all mail": Folder.Role.ALL,
    "starred": Folder.Role.FLAGGED,
    "flagged": Folder.Role.FLAGGED,
    "important": Folder.Role.IMPORTANT,
}


def guess_role(name: str, delimiter: str = "/") -> str:
    """Role from a folder's name alone (the fallback when the server sends no SPECIAL-USE)."""
    leaf = name.rsplit(delimiter, 1)[-1] if delimiter else name
    if name.upper() == "INBOX":
        return Folder.Role.INBOX
    return _ROLE_BY_NAME.get(leaf.strip().lower(), Folder.Role.CUSTOM)


def folders_by_name(account: Account, names: Iterable[str]) -> dict[str, Folder]:
    """The account's folders with these names, creating the missing ones (role guessed)."""
    wanted = set(names)
    found = {f.name: f for f in Folder.objects.filter(account=account, name__in=wanted)}
    missing = [
        Folder(account=account, name=name, display_name=name, role=guess_role(name))
        for name in sorted(wanted - found.keys())
    ]
    if missing:
        Folder.objects.bulk_create(missing, ignore_conflicts=True)
        before = {f.pk for f in found.values()}
        found = {f.name: f for f in Folder.objects.filter(account=account, name__in=wanted)}
        events_record(account, "folder", "created", {f.pk for f in found.values()} - before)
    return found
