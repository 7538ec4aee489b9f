"""Store writes that mirror a provider's mailbox state: folders, locations, flags, deletions.

Sync apps call these after they decided what changed; they hold no protocol knowledge.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from django.db import connection, transaction
from django.db.models import Count
from django.utils import timezone

from .events import events_record, messages_updated
from .files import files_delete_unused_on_commit, message_files
from .ingest import FLAG_FIELDS, flag_values
from .models import Account, Folder, IngestBatch, Message, MessageLocation, Thread
from .threader import refresh_thread_summaries


def folder_upsert(
    account: Account, *, name: str, delimiter: str, role: str, parent: Folder | None
) -> Folder:
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


def folder_uids(folder: Folder) -> set[int]:
    return set(
        MessageLocation.objects.filter(folder=folder, uid__isnull=False).values_list(
            "uid", flat=True
        )
    )


def folder_reset(folder: Folder, *, uidvalidity: int) -> int:
    """UIDVALIDITY changed: every UID we knew is void. Messages stay (a re-fetch finds them by
    content), their locations in this folder go."""
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
    message_ids = dict(locations.values_list("message_id", "uid"))
    messages = Message.objects.filter(id__in=message_ids).only("id", *FLAG_FIELDS.values())
    changed = []
    now = timezone.now()
    for message in messages:
        values = flag_values(flags_by_uid[message_ids[message.id]])
        if any(getattr(message, name) != value for name, value in values.items()):
            for name, value in values.items():
                setattr(message, name, value)
            message.flags_at = now
            changed.append(message)
    if changed:
        with transaction.atomic():
            Message.objects.bulk_update(
                changed, [*FLAG_FIELDS.values(), "flags_at"], batch_size=1000
            )
            messages_updated(folder.account, [m.id for m in changed])
    return len(changed)


def orphans_delete(account: Account) -> int:
    """Messages in no folder any more are gone from the server: delete them and tidy threads."""
    with transaction.atomic():
        orphans = Message.objects.filter(account=account, locations__isnull=True)
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
