"""Messages the store already has, found without downloading them.

A move, a copy or a UIDVALIDITY change gives a message a new (folder, UID). Before any body is
fetched, the candidate UIDs' identity items are (server id, Message-ID field, RFC822.SIZE,
INTERNALDATE, FLAGS: about a hundred bytes a message), and the messages the store recognises
are attached at their new UIDs (`messages.mailbox.locations_attach_known`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC

from messages import mailbox
from messages.models import Folder

from .imap import FetchedMessage, ImapConnection

IDENTITY_BATCH = 1000


def known_locations(conn: ImapConnection, folder: Folder, uids: Sequence[int]) -> list[int]:
    """Attach the messages at UIDS of FOLDER (selected) that the store has; return the other
    UIDs, in their order: those still need a body."""
    attached: set[int] = set()
    for start in range(0, len(uids), IDENTITY_BATCH):
        chunk = list(uids[start : start + IDENTITY_BATCH])
        seen = [_server_message(m) for m in conn.fetch_identities(chunk)]
        attached |= mailbox.locations_attach_known(folder, seen)
    return [uid for uid in uids if uid not in attached]


def _server_message(message: FetchedMessage) -> mailbox.ServerMessage:
    internal = message.internal_date
    return mailbox.ServerMessage(
        uid=message.uid,
        flags=message.flags,
        size=message.size,
        internal_date=internal.astimezone(UTC) if internal is not None else None,
        server_id=message.server_id,
        message_id_fields=message.message_id_field or b"",
    )
