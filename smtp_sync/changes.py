"""Two-way: a client's change to a message (read, flagged, moved) applied on the IMAP server.

The server is changed first; the store follows through an incremental sync of the account, so
the store only ever shows what the server really holds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from messages.models import Folder, Message, MessageLocation

from .pool import pooled_connection
from .services import imap_sync_account
from .sync import server_for

FLAG_OF_FIELD = {"read": "\\Seen", "flagged": "\\Flagged", "answered": "\\Answered"}


class ChangeError(ValueError):
    """The change cannot be applied as asked (unknown folder, unknown field)."""


def imap_message_change(
    message_id: int,
    change: dict[str, Any],
    *,
    connection_factory: Callable = pooled_connection,
) -> None:
    message = Message.objects.select_related("account").get(pk=message_id)
    account = message.account
    locations = list(
        MessageLocation.objects.filter(message=message, uid__isnull=False).select_related("folder")
    )
    destination = _destination(account, change)
    unknown = set(change) - set(FLAG_OF_FIELD) - {"folder", "trash"}
    if unknown:
        raise ChangeError(f"unknown change field(s): {', '.join(sorted(unknown))}")
    with connection_factory(server_for(account)) as conn:
        for location in locations:
            conn.select(location.folder.name, readonly=False)
            for field, flag in FLAG_OF_FIELD.items():
                if field in change:
                    conn.set_flags([location.uid], [flag], add=bool(change[field]))
        if destination is not None:
            for location in locations:
                if location.folder_id != destination.pk:
                    conn.select(location.folder.name, readonly=False)
                    conn.move([location.uid], destination.name)
    imap_sync_account(account.pk)


def _destination(account, change: dict[str, Any]) -> Folder | None:
    if change.get("trash"):
        folder = Folder.objects.filter(account=account, role=Folder.Role.TRASH).first()
        if folder is None:
            raise ChangeError("this account has no Trash folder")
        return folder
    name = change.get("folder")
    if not name:
        return None
    folder = Folder.objects.filter(account=account, name=name).first()
    if folder is None:
        raise ChangeError(f"no folder named {name!r} in this account")
    return folder
