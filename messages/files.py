"""Files of the media storage that belong to messages: attachments and big raw messages.

Both are content-addressed (named by their sha256), so one file may serve several messages,
in several accounts: a file is removed only once no row names it any more.
"""

from __future__ import annotations

from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import QuerySet

from .models import Attachment, Message, RawMessage


def message_files(messages: QuerySet[Message]) -> set[str]:
    attachments = Attachment.objects.filter(message__in=messages).exclude(file="")
    raws = RawMessage.objects.filter(message__in=messages).exclude(file="")
    return set(attachments.values_list("file", flat=True)) | set(
        raws.values_list("file", flat=True)
    )


def files_delete_unused_on_commit(names: set[str]) -> None:
    """Once the deleting transaction commits, remove those of NAMES that nothing names."""
    if not names:
        return

    def delete() -> None:
        used = set(Attachment.objects.filter(file__in=names).values_list("file", flat=True))
        used |= set(RawMessage.objects.filter(file__in=names).values_list("file", flat=True))
        for name in names - used:
            default_storage.delete(name)

    transaction.on_commit(delete)
