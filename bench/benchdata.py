"""What the IMAP benchmarks share: the private Dovecot's environment, and removing a bench
user's data (Django must be set up for that)."""

from __future__ import annotations

import os
from pathlib import Path

from django.contrib.auth import get_user_model
from django.db import transaction

from messages.files import files_delete_unused_on_commit, message_files
from messages.models import Message

DOVECOT_ENV = ("IMAP_TEST_HOST", "IMAP_TEST_PORT", "DOVECOT_USERS_DIR", "DOVECOT_HOME")


def dovecot_env(command: str) -> tuple[str, int, Path, Path]:
    """(host, port, users dir, home dir) of the private Dovecot that `scripts/devservices.py`
    started; exits saying how to run COMMAND when they are not set."""
    missing = [name for name in DOVECOT_ENV if not os.environ.get(name)]
    if missing:
        raise SystemExit(
            f"{', '.join(missing)} not set: run under `scripts/devservices.py exec --temp --`"
            f" ({command}) or `source` the env of running services"
        )
    return (
        os.environ["IMAP_TEST_HOST"],
        int(os.environ["IMAP_TEST_PORT"]),
        Path(os.environ["DOVECOT_USERS_DIR"]),
        Path(os.environ["DOVECOT_HOME"]),
    )


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
