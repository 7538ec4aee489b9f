"""`import_mail`: load .eml files, directories of them and mbox files into an account.

Messages are published in batches on `email_new_message` like any producer's (messages.batches:
bounded in flight, the command ends when they are stored), or with --inline stored by this
process through the same consumer service: an import is idempotent like any sync, and running
it twice changes nothing.
"""

from __future__ import annotations

import csv
import mailbox
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from email import policy
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from tqdm import tqdm

from emailplatform import topics
from messages.batches import BatchPublisher
from messages.models import Account, SyncRun
from messages.services import sync_run_finish, sync_run_start

DEFAULT_FOLDER = "INBOX"
DEFAULT_BATCH_SIZE = 200
MBOX_MAGIC = b"From "
# A batch is also cut when its raw bytes pass this, so a run of huge messages stays bounded.
BATCH_BYTES_LIMIT = 64 * 1024 * 1024
_HEADER_END = re.compile(rb"\r?\n\r?\n")


@dataclass
class ImportTotals:
    """What an import did, for its summary line."""

    read: int = 0
    created: int = 0
    damaged: int = 0
    dead_letters: int = 0
    skipped_files: int = 0

    @property
    def already_present(self) -> int:
        return self.read - self.created - self.dead_letters

    def summary(self) -> str:
        noun = "message" if self.read == 1 else "messages"
        failed = f", {self.dead_letters} not stored (dead letters)" if self.dead_letters else ""
        return (
            f"Imported {self.read} {noun}: {self.created} new, "
            f"{self.already_present} already present, "
            f"{self.damaged} damaged (parse defects recorded){failed}."
        )


def gmail_labels(raw: bytes) -> list[str] | None:
    """The labels of a Google Takeout message (its X-Gmail-Labels header), or None."""
    end = _HEADER_END.search(raw)
    try:
        headers = BytesHeaderParser(policy=policy.default).parsebytes(
            raw[: end.end()] if end else raw
        )
        value = headers.get("X-Gmail-Labels")
    except Exception:  # unreadable headers: the message is imported without its labels
        return None
    if value is None:
        return None
    text = str(value)
    try:
        names = next(csv.reader([text], skipinitialspace=True), [])
    except csv.Error:
        names = text.split(",")
    return [name.strip() for name in names if name.strip()]


def takeout_placement(labels: Sequence[str]) -> tuple[list[str], list[str] | None]:
    """Folders and IMAP-style flags for Takeout labels.

    "Opened" and "Unread" are read state, not places; "Inbox" is the INBOX folder.
    Flags are None when the labels say nothing about read state.
    """
    folders: list[str] = []
    lowered = set()
    for label in labels:
        key = label.lower()
        lowered.add(key)
        if key in ("opened", "unread"):
            continue
        name = DEFAULT_FOLDER if key == "inbox" else label
        if name not in folders:
            folders.append(name)
    if not lowered & {"opened", "unread"}:
        return folders, None
    flags = []
    if "opened" in lowered:
        flags.append("\\Seen")
    if "starred" in lowered:
        flags.append("\\Flagged")
    if "drafts" in lowered:
        flags.append("\\Draft")
    return folders, flags


def collect_files(
    paths: Sequence[str], on_error: Callable[[OSError], None] | None = None
) -> list[Path]:
    """The regular files named or found (recursively, without dotfiles) under the paths."""
    files: list[Path] = []
    for arg in paths:
        path = Path(arg)
        if path.is_dir():
            files.extend(_walk(path, on_error))
        elif path.is_file():
            files.append(path)
        elif path.exists() or path.is_symlink():
            raise CommandError(f"{arg} is neither a regular file nor a directory.")
        else:
            raise CommandError(f"Path {arg} does not exist.")
    return files


def _walk(root: Path, on_error: Callable[[OSError], None] | None) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if not name.startswith(".") and path.is_file():
                yield path


def resolve_account(
    address: str, *, owner: str | None = None, create_for: str | None = None
) -> tuple[Account, bool]:
    """The account to import into, and whether it was created now."""
    if owner and create_for and owner != create_for:
        raise CommandError("--owner and --create-for name different users.")
    username = create_for or owner
    accounts = Account.objects.filter(email_address__iexact=address).select_related("owner")
    user = None
    if username:
        user_model = get_user_model()
        user = user_model.objects.filter(**{user_model.USERNAME_FIELD: username}).first()
        if user is None:
            raise CommandError(f"User {username!r} does not exist.")
        accounts = accounts.filter(owner=user)
    found = list(accounts.order_by("pk"))
    if not found:
        if user is not None and create_for:
            created = Account.objects.create(
                owner=user, provider=Account.Provider.LOCAL, email_address=address
            )
            return created, True
        whose = f" owned by {username!r}" if username else ""
        raise CommandError(
            f"No account {address}{whose}; create a local one with --create-for USERNAME."
        )
    owners = sorted({a.owner.get_username() for a in found})
    if len(owners) > 1:
        raise CommandError(
            f"Several users have an account {address} ({', '.join(owners)}); "
            "choose one with --owner USERNAME."
        )
    if len(found) > 1:
        local = [a for a in found if a.provider == Account.Provider.LOCAL]
        if len(local) != 1:
            providers = ", ".join(a.provider for a in found)
            raise CommandError(
                f"User {owners[0]!r} has several accounts {address} ({providers}) "
                "and none of them is local."
            )
        found = local
    account = found[0]
    if account.status == Account.Status.DELETING:
        raise CommandError(f"Account {address} is being deleted.")
    return account, False


class Command(BaseCommand):
    help = (
        "Import .eml files, directories of them and mbox files (e.g. a Google Takeout export) "
        "into an account, through the same service as the EmailNewMessage consumer."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+", metavar="PATH")
        parser.add_argument("--account", required=True, metavar="ADDRESS")
        parser.add_argument(
            "--owner", metavar="USERNAME", help="Owner, when several users have the address."
        )
        parser.add_argument(
            "--create-for",
            metavar="USERNAME",
            help="Create a local account for this user if it has none with the address.",
        )
        parser.add_argument(
            "--folder",
            metavar="NAME",
            help=f"Folder for every message (default: Takeout labels, else {DEFAULT_FOLDER}).",
        )
        parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N")
        parser.add_argument(
            "--no-attachments",
            action="store_true",
            help="Keep attachment metadata only, not their content.",
        )
        parser.add_argument(
            "--inline",
            action="store_true",
            help="Store the messages in this process instead of through the message workers.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.batch_size: int = options["batch_size"]
        if self.batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        self.folder: str | None = options["folder"]
        self.include_attachments = not options["no_attachments"]
        self.totals = ImportTotals()
        files = collect_files(options["paths"], on_error=self._unreadable_dir)
        self.account, created = resolve_account(
            options["account"], owner=options["owner"], create_for=options["create_for"]
        )
        if created:
            self.stderr.write(
                f"Created local account {self.account.email_address} "
                f"for {self.account.owner.get_username()}."
            )
        self.run = sync_run_start(account=self.account, kind=SyncRun.Kind.IMPORT)
        self.publisher = BatchPublisher(
            self.account.pk,
            self.account.provider,
            sync_run_id=self.run.pk,
            inline=True if options["inline"] else None,
        )
        try:
            self._import(files)
            self._drain()
        except BaseException as exc:
            sync_run_finish(run=self.run, error=f"{type(exc).__name__}: {exc}")
            raise
        sync_run_finish(run=self.run)
        if self.totals.skipped_files:
            self.stderr.write(f"{self.totals.skipped_files} file(s) could not be read: skipped.")
        self.stdout.write(self.totals.summary())

    def _import(self, files: list[Path]) -> None:
        self.pending: list[dict] = []
        self.pending_bytes = 0
        sizes = [self._size(path) for path in files]
        with tqdm(
            total=sum(sizes),
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc="import",
            file=sys.stderr,
            disable=None,
        ) as bar:
            for path, size in zip(files, sizes, strict=True):
                done = 0
                for raw, from_mbox in self._read(path):
                    self._add(raw, from_mbox)
                    done += len(raw)
                    bar.update(len(raw))
                    bar.set_postfix_str(f"{self.totals.read} messages", refresh=False)
                if size > done:
                    bar.update(size - done)
            self._flush()

    def _read(self, path: Path) -> Iterator[tuple[bytes, bool]]:
        """The messages of one file: the file itself, or each message of an mbox."""
        try:
            with path.open("rb") as handle:
                head = handle.read(len(MBOX_MAGIC))
                raw = None if head == MBOX_MAGIC else head + handle.read()
        except OSError as exc:
            self._skip(path, exc)
            return
        if raw is not None:
            if raw:
                yield raw, False
            else:
                self._warn(f"{path}: empty file, skipped.")
            return
        yield from self._read_mbox(path)

    def _read_mbox(self, path: Path) -> Iterator[tuple[bytes, bool]]:
        count = 0
        try:
            box = mailbox.mbox(path, create=False)
        except (OSError, mailbox.Error) as exc:
            self._skip(path, exc)
            return
        try:
            for key in box.iterkeys():
                yield box.get_bytes(key), True
                count += 1
        except (OSError, mailbox.Error) as exc:
            self._skip(path, exc, after=count)
        finally:
            box.close()

    def _add(self, raw: bytes, from_mbox: bool) -> None:
        folders = [self.folder] if self.folder else [DEFAULT_FOLDER]
        flags = None
        labels = gmail_labels(raw) if from_mbox else None
        if labels is not None:
            label_folders, flags = takeout_placement(labels)
            if not self.folder and label_folders:
                folders = label_folders
        self.pending.append(
            topics.new_message_item(
                raw,
                labels=folders,
                flags=flags,
                include_attachments=self.include_attachments,
            )
        )
        self.pending_bytes += len(raw)
        self.totals.read += 1
        if len(self.pending) >= self.batch_size or self.pending_bytes >= BATCH_BYTES_LIMIT:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        self.publisher.publish(self.pending, fetched_at=timezone.now())
        self.pending = []
        self.pending_bytes = 0

    def _drain(self) -> None:
        """Wait until every batch is stored; the totals are what the consumers counted."""
        outcome = self.publisher.drain()
        for problem in outcome.problems:
            self._warn(problem)
        run = SyncRun.objects.get(pk=self.run.pk)
        self.totals.created, self.totals.damaged = run.created, run.damaged
        self.totals.dead_letters = outcome.dead_letters
        if outcome.lost_batches:
            raise CommandError(
                f"{outcome.lost_batches} batch(es) were not stored: no message worker took "
                "them in time (is one running?). Run the import again: what is stored already "
                "is skipped."
            )

    def _size(self, path: Path) -> int:
        try:
            return path.stat().st_size
        except OSError:
            return 0

    def _skip(self, path: Path, exc: BaseException, after: int = 0) -> None:
        self.totals.skipped_files += 1
        if after:
            self._warn(f"{path}: cannot read past message {after} ({exc}); rest skipped.")
        else:
            self._warn(f"{path}: cannot read ({exc}); skipped.")

    def _unreadable_dir(self, exc: OSError) -> None:
        self.totals.skipped_files += 1
        self._warn(f"{exc.filename}: cannot list directory ({exc.strerror}); skipped.")

    def _warn(self, message: str) -> None:
        with tqdm.external_write_mode(file=sys.stderr):
            self.stderr.write(message, self.style.WARNING)
