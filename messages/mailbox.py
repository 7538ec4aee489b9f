"""Store writes that mirror a provider's mailbox state: folders, locations, flags, deletions.

Sync apps call these after they decided what changed; they hold no protocol knowledge.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import connection, transaction
from django.db.models import Count, Exists, OuterRef
from django.utils import timezone

from .events import events_record, messages_updated
from .files import files_delete_unused_on_commit, message_files
from .folders import folders_by_name
from .ingest import FLAG_FIELDS, INGEST_LOCK_NAMESPACE, flag_values
from .mime import message_id_from_fields
from .models import Account, Folder, IngestBatch, Message, MessageLocation, Thread
from .threader import refresh_thread_summaries

FLAG_COLUMNS = [*FLAG_FIELDS.values(), "flags_at"]


def folder_upsert(
    account: Account,
    *,
    name: str,
    delimiter: str,
    role: str,
    parent: Folder | None,
    display_name: str | None = None,
) -> Folder:
    """The folder NAME with these attributes (DISPLAY_NAME: by default the last part of the
    name)."""
    if display_name is None:
        display_name = name.rsplit(delimiter, 1)[-1] if delimiter else name
    wanted = {
        "delimiter": delimiter,
        "role": role,
        "parent_id": parent.pk if parent else None,
        "display_name": display_name,
    }
    with transaction.atomic():
        folder = Folder.objects.filter(account=account, name=name).first()
        if folder is None:
            folder = Folder.objects.create(account=account, name=name, **wanted)
            events_record(account, "folder", "created", [folder.pk])
        elif any(getattr(folder, key) != value for key, value in wanted.items()):
            for key, value in wanted.items():
                setattr(folder, key, value)
            folder.save(update_fields=[*wanted])
            events_record(account, "folder", "updated", [folder.pk])
    return folder


def folders_remove_missing(account: Account, present: Iterable[str]) -> int:
    """Folders the server no longer has go, with their locations."""
    with transaction.atomic():
        gone = Folder.objects.filter(account=account).exclude(name__in=set(present))
        gone_ids = list(gone.values_list("id", flat=True))
        if not gone_ids:
            return 0
        touched = _messages_in(MessageLocation.objects.filter(folder_id__in=gone_ids))
        Folder.objects.filter(id__in=gone_ids).delete()
        events_record(account, "folder", "deleted", gone_ids)
        messages_updated(account, touched)
    return len(gone_ids)


def _messages_in(locations) -> set[int]:
    return set(locations.values_list("message_id", flat=True))


def folder_uids(folder: Folder, *, min_uid: int = 0) -> set[int]:
    """The UIDs stored in FOLDER (those of at least MIN_UID)."""
    locations = MessageLocation.objects.filter(folder=folder, uid__isnull=False)
    if min_uid:
        locations = locations.filter(uid__gte=min_uid)
    return set(locations.values_list("uid", flat=True))


def folder_reset(folder: Folder, *, uidvalidity: int) -> int:
    """UIDVALIDITY changed: every UID we knew is void. Messages stay, their locations in this
    folder go; the next fetch re-maps them (`locations_attach_known`: server id or headers,
    else the content hash after a download)."""
    with transaction.atomic():
        IngestBatch.objects.filter(folder=folder, stored_at__isnull=True).delete()
        locations = MessageLocation.objects.filter(folder=folder)
        touched = _messages_in(locations)
        removed, _ = locations.delete()
        folder.uidvalidity = uidvalidity
        folder.uidnext = None
        folder.highest_modseq = None
        folder.sync_state = {}
        folder.save(update_fields=["uidvalidity", "uidnext", "highest_modseq", "sync_state"])
        messages_updated(folder.account, touched)
    return removed


def locations_remove(folder: Folder, uids: Iterable[int]) -> int:
    """The server no longer has these UIDs in FOLDER: their locations go, and so do they from
    every batch still on its way to the store (a late batch must not bring them back).

    The batches first: a consumer writing one holds its row until it commits, so once the
    UPDATE has passed, that batch's locations are visible to the DELETE that follows."""
    uids = sorted(set(uids))
    if not uids:
        return 0
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                """
                UPDATE mailstore_ingestbatch
                   SET uids = ARRAY(SELECT u FROM unnest(uids) AS u WHERE NOT (u = ANY(%s)))
                 WHERE folder_id = %s AND stored_at IS NULL AND uids && %s::bigint[]
                """,
                [uids, folder.pk, uids],
            )
        locations = MessageLocation.objects.filter(folder=folder, uid__in=uids)
        touched = _messages_in(locations)
        removed, _ = locations.delete()
        messages_updated(folder.account, touched)
    return removed


def flags_apply(folder: Folder, flags_by_uid: Mapping[int, Sequence[str]]) -> int:
    """Set each message's flags to the server's; return how many messages changed."""
    if not flags_by_uid:
        return 0
    locations = MessageLocation.objects.filter(folder=folder, uid__in=list(flags_by_uid))
    uids = dict(locations.values_list("message_id", "uid"))
    changed = _flags_changed({message_id: flags_by_uid[uid] for message_id, uid in uids.items()})
    if changed:
        with transaction.atomic():
            Message.objects.bulk_update(changed, FLAG_COLUMNS, batch_size=1000)
            messages_updated(folder.account, [m.id for m in changed])
    return len(changed)


def orphans_delete(account: Account, *, among: Iterable[int] | None = None) -> int:
    """Messages in no folder any more are gone from the server: delete them and tidy threads.
    AMONG: look only at these messages (a sync that knows which ones it touched)."""
    with transaction.atomic():
        orphans = Message.objects.filter(account=account, locations__isnull=True)
        if among is not None:
            orphans = orphans.filter(id__in=sorted(set(among)))
        rows = list(orphans.values_list("id", "thread_id"))
        if not rows:
            return 0
        message_ids = [m for m, _ in rows]
        thread_ids = {t for _, t in rows}
        gone = Message.objects.filter(id__in=message_ids)
        files = message_files(gone)
        gone.delete()
        files_delete_unused_on_commit(files)
        empty = list(
            Thread.objects.filter(id__in=thread_ids)
            .annotate(n=Count("messages"))
            .filter(n=0)
            .values_list("id", flat=True)
        )
        Thread.objects.filter(id__in=empty).delete()
        refresh_thread_summaries(thread_ids)
        events_record(account, "message", "deleted", message_ids)
        events_record(account, "thread", "deleted", empty)
        events_record(account, "thread", "updated", thread_ids - set(empty))
    return len(message_ids)


def messages_remove(account: Account, provider_ids: Iterable[str]) -> int:
    """The provider no longer has these messages (by provider id): they go from every batch
    still on its way to the store (rule 2 of messages.batch_store), then from the store.

    The batches first, as in `locations_remove`: a consumer writing one holds its row until it
    commits, so once the UPDATE has passed, what that batch wrote is visible to the DELETE."""
    ids = sorted(set(provider_ids))
    if not ids:
        return 0
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                """
                UPDATE mailstore_ingestbatch
                   SET provider_ids = ARRAY(
                           SELECT p FROM unnest(provider_ids) AS p
                            WHERE NOT (p::text = ANY(%s::text[])))
                 WHERE account_id = %s AND stored_at IS NULL
                   AND provider_ids::text[] && %s::text[]
                """,
                [ids, account.pk, ids],
            )
        message_ids = list(
            Message.objects.filter(account=account, provider_id__in=ids).values_list(
                "id", flat=True
            )
        )
        if not message_ids:
            return 0
        MessageLocation.objects.filter(message_id__in=message_ids).delete()
        return orphans_delete(account, among=message_ids)


def message_folders_set(
    account: Account,
    folders_by_provider_id: Mapping[str, Collection[str]],
    *,
    flags: Mapping[str, Sequence[str]] | None = None,
    as_of: datetime | None = None,
) -> tuple[int, int]:
    """Put each stored message (by provider id) in exactly the folders named for it, and give
    it FLAGS: the provider's current state (Gmail's labels), read at AS_OF. Ingestion only
    adds locations; this also takes them away. Locations are without UID. Flags read or
    changed after AS_OF (Message.flags_at) stay. A message left in no folder is deleted.
    Returns (messages changed, messages deleted); ids not in the store are ignored."""
    if not folders_by_provider_id:
        return 0, 0
    as_of = as_of or timezone.now()
    names = {name for wanted in folders_by_provider_id.values() for name in wanted}
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)", [INGEST_LOCK_NAMESPACE, account.pk]
            )
        folders = folders_by_name(account, names)
        messages = list(
            Message.objects.filter(
                account=account, provider_id__in=list(folders_by_provider_id)
            ).only("id", "provider_id", "sort_date", "flags_at", *FLAG_FIELDS.values())
        )
        if not messages:
            return 0, 0
        held: dict[int, dict[int, list[MessageLocation]]] = {}
        for loc in MessageLocation.objects.filter(message__in=messages):
            held.setdefault(loc.message_id, {}).setdefault(loc.folder_id, []).append(loc)
        to_create, to_delete, changed, emptied = [], [], set(), []
        flagged = []
        for message in messages:
            wanted = {folders[n].id for n in folders_by_provider_id[message.provider_id]}
            here = held.get(message.id, {})
            for folder_id, locations in here.items():
                if folder_id not in wanted:
                    to_delete += [loc.pk for loc in locations]
                    changed.add(message.id)
            for folder_id in wanted - here.keys():
                to_create.append(
                    MessageLocation(
                        message_id=message.id,
                        folder_id=folder_id,
                        uid=None,
                        sort_date=message.sort_date,
                    )
                )
                changed.add(message.id)
            if not wanted:
                emptied.append(message.id)
            wanted_flags = (flags or {}).get(message.provider_id)
            if wanted_flags is not None and _flags_set(message, wanted_flags, as_of):
                flagged.append(message)
                changed.add(message.id)
        MessageLocation.objects.filter(pk__in=to_delete).delete()
        MessageLocation.objects.bulk_create(to_create, batch_size=1000)
        if flagged:
            Message.objects.bulk_update(flagged, FLAG_COLUMNS, batch_size=1000)
        deleted = orphans_delete(account, among=emptied) if emptied else 0
        messages_updated(account, changed - set(emptied))
    return len(changed), deleted


def _flags_set(message: Message, flags: Sequence[str], as_of: datetime) -> bool:
    """Give MESSAGE (not saved) the FLAGS read at AS_OF unless its own are newer; True when
    they changed."""
    if message.flags_at is not None and message.flags_at >= as_of:
        return False
    values = flag_values(flags)
    if all(getattr(message, key) == value for key, value in values.items()):
        return False
    for key, value in values.items():
        setattr(message, key, value)
    message.flags_at = as_of
    return True


@dataclass(frozen=True)
class ServerMessage:
    """A message at a UID of a folder, as the server describes it without its body."""

    uid: int
    flags: Sequence[str]
    size: int
    internal_date: datetime | None  # aware
    server_id: str | None  # see Message.server_ids
    message_id_fields: bytes  # the server's BODY[HEADER.FIELDS (MESSAGE-ID)]


def account_messages_present(account_id: int) -> tuple[bool, bool]:
    """Whether the account has messages, and whether some have no server id: one query."""
    of_account = Message.objects.filter(account_id=OuterRef("pk"))
    row = (
        Account.objects.filter(pk=account_id)
        .values_list(Exists(of_account), Exists(of_account.filter(server_ids=[])))
        .first()
    )
    return (row[0], row[1]) if row is not None else (False, False)


def locations_attach_known(folder: Folder, seen: Sequence[ServerMessage]) -> set[int]:
    """Put the messages the store already has at their UIDs in FOLDER, with the server's
    flags, and return those UIDs: the others need their bodies downloaded.

    A message is known by its server id, else (servers without ids, or messages stored before
    ids were kept) by Message-ID, RFC822.SIZE and INTERNALDATE together, and only when one
    stored message has all three, one UID here has them, and no server id says otherwise: two
    different messages may share a Message-ID, and a wrong merge would show one as the other.
    A UID that named another message loses that location (as in ingestion).
    """
    if not seen:
        return set()
    account = folder.account
    if not _match_server_ids(account, seen) and not _match_headers(account, seen):
        # Nothing known (new mail, the usual case): no lock needed. A message an ingestion
        # stores meanwhile is downloaded once more and stored as the same message.
        return set()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)", [INGEST_LOCK_NAMESPACE, account.pk]
            )
        by_server_id = _match_server_ids(account, seen)
        by_headers = _match_headers(account, [m for m in seen if m.uid not in by_server_id])
        matched = {**by_server_id, **{uid: mid for uid, (mid, _) in by_headers.items()}}
        if not matched:
            return set()
        backfill = {mid: sid for mid, sid in by_headers.values() if sid}
        for message_id, server_id in backfill.items():
            Message.objects.filter(pk=message_id, server_ids=[]).update(server_ids=[server_id])
        released = _release_uids(folder, matched)
        attached = _locations_put(folder, matched)
        flagged = _flags_changed({matched[m.uid]: m.flags for m in seen if m.uid in matched})
        Message.objects.bulk_update(flagged, FLAG_COLUMNS, batch_size=1000)
        messages_updated(account, attached | {m.id for m in flagged} | released | set(backfill))
    return set(matched)


def _match_server_ids(account: Account, seen: Sequence[ServerMessage]) -> dict[int, int]:
    """{uid: message id} of the UIDs whose server id one stored message has."""
    wanted = {m.server_id for m in seen if m.server_id}
    if not wanted:
        return {}
    holders: dict[str, list[int]] = {}
    rows = Message.objects.filter(account=account, server_ids__overlap=sorted(wanted))
    for message_id, server_ids in rows.values_list("id", "server_ids"):
        for server_id in wanted.intersection(server_ids):
            holders.setdefault(server_id, []).append(message_id)
    return {
        m.uid: holders[m.server_id][0]
        for m in seen
        if m.server_id and len(holders.get(m.server_id, ())) == 1
    }


def _match_headers(
    account: Account, seen: Sequence[ServerMessage]
) -> dict[int, tuple[int, str | None]]:
    """{uid: (message id, the server id to record on it, if any)} by Message-ID + size +
    date."""
    keys: dict[int, tuple[str, int, datetime]] = {}
    for m in seen:
        message_id = message_id_from_fields(m.message_id_fields)
        if message_id and m.size > 0 and m.internal_date is not None:
            keys[m.uid] = (message_id, m.size, m.internal_date)
    if not keys:
        return {}
    here = Counter(keys.values())
    stored: dict[tuple[str, int, datetime], list[tuple[int, list[str]]]] = {}
    rows = Message.objects.filter(
        account=account,
        message_id_header__in={k[0] for k in keys.values()},
        internal_date__isnull=False,
    ).values_list("message_id_header", "size", "internal_date", "id", "server_ids")
    for message_id, size, internal_date, pk, server_ids in rows:
        stored.setdefault((message_id, size, internal_date), []).append((pk, server_ids))
    matched = {}
    for m in seen:
        key = keys.get(m.uid)
        candidates = stored.get(key, []) if key else []
        if len(candidates) != 1 or here[key] != 1:
            continue
        pk, stored_server_ids = candidates[0]
        if m.server_id and stored_server_ids:
            continue  # the server knows it under other ids: it may well be another message
        matched[m.uid] = (pk, m.server_id)
    return matched


def _release_uids(folder: Folder, matched: Mapping[int, int]) -> set[int]:
    """A (folder, UID) now names another message: the old holder's location there goes.
    Returns the old holders."""
    uids = sorted(matched)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            DELETE FROM mailstore_messagelocation l
             USING unnest(%s::bigint[], %s::bigint[]) AS c(uid, message_id)
             WHERE l.folder_id = %s AND l.uid = c.uid AND l.message_id <> c.message_id
            RETURNING l.message_id
            """,
            [uids, [matched[u] for u in uids], folder.pk],
        )
        return {row[0] for row in cursor.fetchall()}


def _locations_put(folder: Folder, matched: Mapping[int, int]) -> set[int]:
    """Locations (message, folder, UID) for MATCHED {uid: message id}; a location of the
    message here without a UID takes the UID. Returns the messages that changed."""
    held: dict[int, dict[int | None, MessageLocation]] = {}
    for loc in MessageLocation.objects.filter(folder=folder, message_id__in=set(matched.values())):
        held.setdefault(loc.message_id, {})[loc.uid] = loc
    sort_dates = dict(
        Message.objects.filter(id__in=set(matched.values())).values_list("id", "sort_date")
    )
    to_create, to_update, changed = [], [], set()
    for uid, message_id in sorted(matched.items()):
        here = held.setdefault(message_id, {})
        if uid in here:
            continue
        if None in here:
            location = here.pop(None)
            location.uid = uid
            to_update.append(location)
        else:
            location = MessageLocation(
                message_id=message_id, folder=folder, uid=uid, sort_date=sort_dates[message_id]
            )
            to_create.append(location)
        here[uid] = location
        changed.add(message_id)
    if to_update:
        MessageLocation.objects.bulk_update(to_update, ["uid"])
    MessageLocation.objects.bulk_create(to_create, batch_size=1000)
    return changed


def _flags_changed(flags_by_message: Mapping[int, Sequence[str]]) -> list[Message]:
    """The messages whose flags differ from the server's, set to the server's (not saved;
    save FLAG_COLUMNS)."""
    messages = Message.objects.filter(id__in=list(flags_by_message)).only(
        "id", *FLAG_FIELDS.values()
    )
    changed = []
    now = timezone.now()
    for message in messages:
        values = flag_values(flags_by_message[message.id])
        if any(getattr(message, name) != value for name, value in values.items()):
            for name, value in values.items():
                setattr(message, name, value)
            message.flags_at = now  # a batch fetched before now leaves them alone
            changed.append(message)
    return changed
