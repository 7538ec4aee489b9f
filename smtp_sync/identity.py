"""Messages the store already has, found without downloading them.

A move, a copy or a UIDVALIDITY change gives a message a new (folder, UID). Before any body is
fetched, the candidate UIDs' identity items are (server id, RFC822.SIZE, INTERNALDATE, FLAGS:
about a hundred bytes a message), and the messages the store recognises are attached at their
new UIDs (`messages.mailbox.locations_attach_known`). The Message-ID header field, which makes
the server read each message, is asked for only where a headers match may be needed: the
server gave no id, or the account has messages stored without one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC

from messages import mailbox
from messages.models import Folder

from .imap import FetchedMessage, ImapConnection

IDENTITY_BATCH = 1000


def known_locations(
    conn: ImapConnection, folder: Folder, uids: Sequence[int], sizes: dict[int, int] | None = None
) -> list[int]:
    """Attach the messages at UIDS of FOLDER (selected) that the store has; return the other
    UIDs, in their order: those still need a body. SIZES gets the RFC822.SIZE of each UID
    fetched here, so that the body fetch need not ask for it again."""
    if not uids:
        return []
    present, headers = mailbox.account_messages_present(folder.account_id)
    if not present:
        return list(uids)  # an account's first sync: nothing to recognise
    attached: set[int] = set()
    for start in range(0, len(uids), IDENTITY_BATCH):
        chunk = list(uids[start : start + IDENTITY_BATCH])
        seen = [_server_message(m) for m in _identities(conn, chunk, headers=headers)]
        if sizes is not None:
            sizes.update((m.uid, m.size) for m in seen)
        attached |= mailbox.locations_attach_known(folder, seen)
    return [uid for uid in uids if uid not in attached]


def _identities(conn: ImapConnection, uids: list[int], *, headers: bool) -> list[FetchedMessage]:
    fetched = conn.fetch_identities(uids, message_id_field=headers)
    if headers:
        return fetched
    bare = [m.uid for m in fetched if m.server_id is None]
    if not bare:
        return fetched
    again = {m.uid: m for m in conn.fetch_identities(bare, message_id_field=True)}
    return [again.get(m.uid, m) for m in fetched]


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
