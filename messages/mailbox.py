"""Store writes that mirror a provider's mailbox state: folders, locations, flags, deletions.

Sync apps call these after they decided what changed; they hold no protocol knowledge.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from django.db import transaction
from django.db.models import Count

from .ingest import FLAG_FIELDS, flag_values
from .models import Account, Folder, Message, MessageLocation, Thread
from .threader import refresh_thread_summaries


def folder_upsert(
    account: Account, *, name: str, delimiter: str, role: str, parent: Folder | None
) -> Folder:
    display_name = name.rsplit(delimiter, 1)[-1] if delimiter else name
    folder, _ = Folder.objects.update_or_create(
        account=account,
        name=name,
        defaults={
            "delimiter": delimiter,
            "role": role,
            "parent": parent,
            "display_name": display_name,
        },
    )
    return folder


def folders_remove_missing(account: Account, present: Iterable[str]) -> int:
    """Folders the server no longer has go, with their locations."""
    deleted, _ = Folder.objects.filter(account=account).exclude(name__in=set(present)).delete()
    return deleted


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
        removed, _ = MessageLocation.objects.filter(folder=folder).delete()
        folder.uidvalidity = uidvalidity
        folder.uidnext = None
        folder.highest_modseq = None
        folder.sync_state = {}
        folder.save(update_fields=["uidvalidity", "uidnext", "highest_modseq", "sync_state"])
    return removed


def locations_remove(folder: Folder, uids: Iterable[int]) -> int:
    removed, _ = MessageLocation.objects.filter(folder=folder, uid__in=list(uids)).delete()
    return removed


def flags_apply(folder: Folder, flags_by_uid: Mapping[int, Sequence[str]]) -> int:
    """Set each message's flags to the server's; return how many messages changed."""
    if not flags_by_uid:
        return 0
    locations = MessageLocation.objects.filter(folder=folder, uid__in=list(flags_by_uid))
    message_ids = dict(locations.values_list("message_id", "uid"))
    messages = Message.objects.filter(id__in=message_ids).only("id", *FLAG_FIELDS.values())
    changed = []
    for message in messages:
        values = flag_values(flags_by_uid[message_ids[message.id]])
        if any(getattr(message, name) != value for name, value in values.items()):
            for name, value in values.items():
                setattr(message, name, value)
            changed.append(message)
    if changed:
        Message.objects.bulk_update(changed, list(FLAG_FIELDS.values()), batch_size=1000)
    return len(changed)


def orphans_delete(account: Account) -> int:
    """Messages in no folder any more are gone from the server: delete them and tidy threads."""
    with transaction.atomic():
        orphans = Message.objects.filter(account=account, locations__isnull=True)
        thread_ids = set(orphans.values_list("thread_id", flat=True))
        deleted = orphans.count()
        if not deleted:
            return 0
        orphans.delete()
        Thread.objects.filter(id__in=thread_ids).annotate(n=Count("messages")).filter(n=0).delete()
        refresh_thread_summaries(thread_ids)
    return deleted
