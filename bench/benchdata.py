"""What the IMAP benchmarks share: removing a bench user's data (Django must be set up)."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction

from messages.files import files_delete_unused_on_commit, message_files
from messages.models import Message


def bench_user_remove(username: str) -> bool:
    """Delete the bench user, everything it owns, and the files no one else uses; False when
    there was no such user."""
    owner = get_user_model().objects.filter(username=username).first()
    if owner is None:
        return False
    with transaction.atomic():
        messages = Message.objects.filter(account__owner=owner)
        files = message_files(messages)
        messages.delete()  # Message.thread is PROTECT: messages first
        owner.delete()
        files_delete_unused_on_commit(files)
    return True
