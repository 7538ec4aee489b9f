"""Writes of the store other than ingestion: dead letters, sync runs, full-sync scheduling,
and the client API's writes (accounts, message changes, attachments fetched on demand)."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from emailplatform import topics
from emailplatform.observability import metrics
from emailplatform.observability.logcontext import sync_run_bind
from emailplatform.tempdirs import process_temp_dir

from . import providers
from .events import events_record, messages_updated
from .files import files_delete_unused_on_commit, message_files
from .folders import folders_by_name
from .ingest import INGEST_LOCK_NAMESPACE, IngestResult, attachment_file_store
from .mime import ParsedMessage, parse_message
from .mime_stream import parse_message_file
from .models import (
    Account,
    Attachment,
    DeadLetter,
    Folder,
    Message,
    MessageLocation,
    RawMessage,
    SyncRun,
    Thread,
)
from .signals import account_status_changed_send

logger = logging.getLogger(__name__)

DEAD_LETTER_PAYLOAD_LIMIT = 256 * 1024


def dead_letter_record(*, task_name: str, reason: str, payload: Any) -> DeadLetter:
    """Keep a payload that broke the contract, with the reason, for an operator to inspect."""
    account_id = payload.get("accountId") if isinstance(payload, dict) else None
    if not isinstance(account_id, int) or isinstance(account_id, bool):
        account_id = None
    try:
        text = json.dumps(payload)
    except (TypeError, ValueError):
        text = repr(payload)
        payload = None
    if len(text) > DEAD_LETTER_PAYLOAD_LIMIT:
        payload = None
    transaction.on_commit(lambda: metrics.error("dead_letter"))
    return DeadLetter.objects.create(
        task_name=task_name,
        account_id=account_id,
        reason=reason,
        payload=payload,
        payload_excerpt="" if payload is not None else text[:4096],
    )


def sync_run_start(*, account: Account, kind: str, total: int | None = None) -> SyncRun:
    run = SyncRun.objects.create(account=account, kind=kind, progress_total=total)
    sync_run_bind(run.pk)
    return run


def sync_run_add(*, run_id: int, result: IngestResult) -> None:
    SyncRun.objects.filter(pk=run_id).update(
        created=F("created") + result.created,
        updated=F("updated") + result.updated,
        unchanged=F("unchanged") + result.unchanged,
        damaged=F("damaged") + result.damaged,
        progress_done=F("progress_done") + result.created + result.updated + result.unchanged,
    )


def sync_run_finish(*, run: SyncRun, error: str = "") -> None:
    run.status = SyncRun.Status.FAILED if error else SyncRun.Status.SUCCEEDED
    run.error = error
    run.finished_at = timezone.now()
    with transaction.atomic():
        run.save(update_fields=["status", "error", "finished_at"])
        if not error:
            Account.objects.filter(pk=run.account_id).update(last_sync_at=run.finished_at)
        events_record(run.account, "sync_run", "updated", [run.pk])
        _sync_run_measure(run, run.status)


def _sync_run_measure(run: SyncRun, outcome: str) -> None:
    provider, kind = run.account.provider, run.kind
    seconds = max(0.0, (timezone.now() - run.started_at).total_seconds())
    transaction.on_commit(
        lambda: metrics.sync_finished(
            provider=provider, kind=kind, outcome=outcome, seconds=seconds
        )
    )


def sync_runs_interrupt(
    *, account_id: int | None = None, run_ids: list[int] | None = None, kinds: list[str]
) -> list[SyncRun]:
    """Mark runs still "running" whose pass is over (its worker died, or it lost the lock) as
    interrupted; return them. Either every such run of ACCOUNT_ID (its caller holds the
    account's sync lock, so no other pass can be running), or the runs RUN_IDS (the watchdog
    saw their account's lock gone). Their progress leaves the API and the admin at once."""
    runs = SyncRun.objects.filter(status=SyncRun.Status.RUNNING, kind__in=kinds)
    if account_id is not None:
        runs = runs.filter(account_id=account_id)
    if run_ids is not None:
        runs = runs.filter(pk__in=run_ids)
    if not runs.exists():  # the usual case: one round trip, not a locking transaction's three
        return []
    with transaction.atomic():
        interrupted = list(
            runs.select_for_update(skip_locked=True, of=("self",)).select_related("account")
        )
        for run in interrupted:
            _sync_run_measure(run, SyncRun.Status.INTERRUPTED)
        SyncRun.objects.filter(pk__in=[r.pk for r in interrupted]).update(
            status=SyncRun.Status.INTERRUPTED,
            finished_at=timezone.now(),
            error="interrupted: the worker running it stopped; its work was handed on",
        )
        for run in sorted(interrupted, key=lambda r: r.account.owner_id):
            events_record(run.account, "sync_run", "updated", [run.pk])
    return interrupted


def full_syncs_schedule() -> int:
    """Publish EmailFullSync for every active account whose provider syncs; return how many.

    Each request is published on its own (no transaction around the loop: its on-commit hooks
    would run in a row at the end, and the first broker error would drop every one after it).
    An account whose request fails is logged and the others go on; the watchdog enqueues again
    a request whose want was recorded."""
    published = failed = 0
    accounts = list(
        Account.objects.filter(status=Account.Status.ACTIVE).values_list("id", "provider")
    )
    for account_id, provider in accounts:
        try:
            if topics.publish_full_sync(account_id, provider):
                published += 1
        except Exception:
            failed += 1
            logger.exception("full sync of account %s not requested", account_id)
    if failed:
        logger.error("full syncs: %d requested, %d failed", published, failed)
    return published


# Accounts, messages and attachments: writes behind the client API -------------------------


class ConflictError(Exception):
    """The object's state does not allow this now (e.g. its account is being deleted)."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class AttachmentUnavailable(Exception):
    """An attachment that is neither stored nor found in the stored raw message."""


ACCOUNT_DELETE_BATCH = 1000


def account_create(*, owner: AbstractBaseUser, provider: str, data: dict[str, Any]) -> Account:
    """Create an account through its provider's adapter (which tests the connection first).

    Raises ValidationError for a duplicate and ProviderError when the provider refuses.
    """
    adapter = providers.get_adapter(provider)
    duplicate = Account.objects.filter(
        owner=owner, provider=provider, email_address__iexact=data["email_address"]
    )
    message = f"You already have a {provider} account for this address."
    if duplicate.exists():
        raise ValidationError({"email_address": [message]})
    try:
        return adapter.create_account(owner, data)
    except IntegrityError as exc:  # the same account created concurrently
        raise ValidationError({"email_address": [message]}) from exc


def account_update(
    *,
    account: Account,
    display_name: str | None = None,
    sync_settings: dict[str, Any] | None = None,
    password: str | None = None,
    oauth2_token: str | None = None,
) -> Account:
    """Change an account's settings; new credentials are tested before they are stored.

    `sync_settings` is merged into the stored ones (a PATCH of some keys keeps the others).
    """
    _refuse_if_deleting(account)
    fields = []
    if display_name is not None:
        account.display_name = display_name
        fields.append("display_name")
    if sync_settings is not None:
        account.sync_settings = {**(account.sync_settings or {}), **sync_settings}
        fields.append("sync_settings")
    if password or oauth2_token:
        adapter = providers.get_adapter(account.provider)
        if not adapter.requires_credentials:
            field = "password" if password else "oauth2_token"
            raise ValidationError({field: [f"{account.provider} accounts have no credentials."]})
        account.set_credentials(
            {"password": password} if password else {"oauth2_token": oauth2_token}
        )
        adapter.test_connection(account)
        if account.status == Account.Status.AUTH_ERROR:
            account.status = Account.Status.ACTIVE
        account.last_error = ""
        fields += ["credentials_encrypted", "status", "last_error"]
    if not fields:
        return account
    with transaction.atomic():
        account.save(update_fields=[*fields, "updated_at"])
        events_record(account, "account", "updated", [account.pk])
    return account


def account_delete_request(*, account: Account) -> None:
    """Mark the account as being deleted and delete it in the background.

    Asking again publishes the deletion again (the task is idempotent), which recovers a
    deletion whose task was lost.
    """
    with transaction.atomic():
        Account.objects.filter(pk=account.pk).update(
            status=Account.Status.DELETING, updated_at=timezone.now()
        )
        account.status = Account.Status.DELETING
        events_record(account, "account", "updated", [account.pk])
        topics.publish_account_deletion(account.pk)
        account_status_changed_send([account.pk], Account.Status.DELETING)


def account_delete(*, account_id: int, max_seconds: float | None = None) -> bool:
    """Delete an account marked for deletion, with its mail, in bounded transactions.

    Returns True when the account is gone (or was already), False when the time budget ran
    out first (call again to go on). Attachment files no other message uses are removed.
    """
    account = Account.objects.filter(pk=account_id).first()
    if account is None:
        return True
    if account.status != Account.Status.DELETING:
        logger.warning("account %s is not marked for deletion; not deleted", account_id)
        return True
    deadline = time.monotonic() + max_seconds if max_seconds else None
    while True:
        ids = list(
            Message.objects.filter(account=account).values_list("id", flat=True)[
                :ACCOUNT_DELETE_BATCH
            ]
        )
        if not ids:
            break
        with transaction.atomic():
            batch = Message.objects.filter(id__in=ids)
            files = message_files(batch)
            batch.delete()
            files_delete_unused_on_commit(files)
        if deadline is not None and time.monotonic() > deadline:
            return False
    with transaction.atomic():
        # A sync that was running may still ingest: take its lock, and delete what it added.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)", [INGEST_LOCK_NAMESPACE, account.pk]
            )
        late = Message.objects.filter(account=account)
        files = message_files(late)
        late.delete()
        files_delete_unused_on_commit(files)
        Thread.objects.filter(account=account).delete()
        events_record(account, "account", "deleted", [account.pk])
        account.delete()
    return True


def credentials_refused_reason(account: Account) -> str:
    """What the owner of an account in auth_error reads, worded for how it is connected."""
    try:
        consent = hasattr(providers.get_adapter(account.provider), "authorization_start")
    except providers.UnknownProvider:
        consent = False
    if consent:
        return (
            f"{account.provider} refused the account's grant: connect it again "
            f"(POST /api/accounts/{account.provider}/authorize/)."
        )
    return "The server refused the stored credentials: set a new password first."


def account_sync_request(*, account: Account, full: bool) -> None:
    """Publish a full or an incremental sync of the account to its provider app."""
    _refuse_if_deleting(account)
    if account.status == Account.Status.PAUSED:
        raise ConflictError("The account is paused.", code="account_paused")
    if account.status == Account.Status.AUTH_ERROR:
        raise ConflictError(credentials_refused_reason(account), code="auth_failed")
    if full:
        published = topics.publish_full_sync(account.pk, account.provider)
    else:
        published = topics.publish_incremental_sync(account.pk, account.provider)
    if not published:
        raise ConflictError(
            f"{account.provider} accounts have nothing to sync.", code="sync_unavailable"
        )


def message_change(
    *,
    message: Message,
    is_read: bool | None = None,
    is_flagged: bool | None = None,
    folder: str | None = None,
    trash: bool | None = None,
    labels_add: list[str] | None = None,
    labels_remove: list[str] | None = None,
) -> bool:
    """A client's change to a message. Returns True when applied in the store, False when
    published to the provider app (which applies it on the server; the store follows).

    TRASH false takes the message out of the trash; LABELS_ADD / LABELS_REMOVE add and remove
    folders (Gmail labels) without moving it: both only where a message can be in several
    folders (Gmail and local accounts). Local accounts (imported mail) have no server: the
    store is changed directly.
    """
    account = message.account
    _refuse_if_deleting(account)
    if folder and trash is not None:
        raise ValidationError({"trash": ["Give either a folder or trash, not both."]})
    is_local = account.provider == Account.Provider.LOCAL
    if folder and not Folder.objects.filter(account=account, name=folder).exists():
        raise ValidationError({"folder": [f"This account has no folder named {folder!r}."]})
    # A label provider always has a trash (Gmail's TRASH label), synced or not.
    has_trash = Folder.objects.filter(account=account, role=Folder.Role.TRASH).exists
    if trash and account.provider not in LABEL_PROVIDERS and not has_trash():
        raise ValidationError({"trash": ["This account has no Trash folder."]})
    _check_labels(account, trash=trash, labels_add=labels_add, labels_remove=labels_remove)
    if is_local:
        _message_change_in_store(
            message, is_read, is_flagged, folder, trash, labels_add or [], labels_remove or []
        )
        return True
    change: dict[str, Any] = {}
    if is_read is not None:
        change["read"] = is_read
    if is_flagged is not None:
        change["flagged"] = is_flagged
    if folder:
        change["folder"] = folder
    if trash is not None:
        change["trash"] = trash
    if labels_add:
        change["labels_add"] = list(labels_add)
    if labels_remove:
        change["labels_remove"] = list(labels_remove)
    if not topics.publish_message_change(account.pk, account.provider, message.pk, change):
        raise ConflictError(
            f"Changes to {account.provider} messages are not supported yet.",
            code="change_unsupported",
        )
    return False


# Providers whose messages can be in several folders at once (labels), and leave the trash.
LABEL_PROVIDERS = frozenset({Account.Provider.GMAIL, Account.Provider.LOCAL})


def _check_labels(
    account: Account,
    *,
    trash: bool | None,
    labels_add: list[str] | None,
    labels_remove: list[str] | None,
) -> None:
    if account.provider not in LABEL_PROVIDERS:
        if trash is False:
            raise ValidationError({"trash": ["Only Gmail and local messages leave the trash."]})
        for name, labels in (("labels_add", labels_add), ("labels_remove", labels_remove)):
            if labels:
                raise ValidationError({name: ["Only Gmail and local accounts have labels."]})
        return
    both = set(labels_add or []) & set(labels_remove or [])
    if both:
        raise ValidationError({"labels_remove": [f"Also in labels_add: {sorted(both)}."]})
    for name, labels in (("labels_add", labels_add), ("labels_remove", labels_remove)):
        if not labels:
            continue
        known = set(
            Folder.objects.filter(account=account, name__in=labels).values_list("name", flat=True)
        )
        missing = sorted(set(labels) - known)
        if missing:
            raise ValidationError({name: [f"This account has no folder named {missing[0]!r}."]})


def _message_change_in_store(
    message: Message,
    is_read: bool | None,
    is_flagged: bool | None,
    folder: str | None,
    trash: bool | None,
    labels_add: list[str],
    labels_remove: list[str],
) -> None:
    account = message.account
    with transaction.atomic():
        current = Message.objects.select_for_update().only("id", "is_read", "is_flagged")
        current = current.get(pk=message.pk)
        changed = []
        for name, value in (("is_read", is_read), ("is_flagged", is_flagged)):
            if value is not None and getattr(current, name) != value:
                setattr(current, name, value)
                setattr(message, name, value)
                changed.append(name)
        if changed:
            now = timezone.now()
            Message.objects.filter(pk=message.pk).update(
                **{name: getattr(current, name) for name in changed}, updated_at=now, flags_at=now
            )
        destination = None
        if trash:
            destination = Folder.objects.filter(account=account, role=Folder.Role.TRASH).first()
            if destination is None:
                destination = folders_by_name(account, ["Trash"])["Trash"]
        elif trash is False:
            in_trash = MessageLocation.objects.filter(
                message=message, folder__role=Folder.Role.TRASH
            )
            if in_trash.exists():
                destination = folders_by_name(account, ["INBOX"])["INBOX"]
        elif folder:
            destination = Folder.objects.get(account=account, name=folder)
        moved = destination is not None and _move_in_store(message, destination)
        labelled = _labels_in_store(message, labels_add, labels_remove)
        if changed or moved or labelled:
            messages_updated(account, [message.pk])


def _labels_in_store(message: Message, add: list[str], remove: list[str]) -> bool:
    removed = 0
    if remove:
        removed, _ = MessageLocation.objects.filter(
            message=message, folder__name__in=remove
        ).delete()
    held = set(MessageLocation.objects.filter(message=message).values_list("folder_id", flat=True))
    missing = Folder.objects.filter(account=message.account, name__in=add).exclude(id__in=held)
    created = MessageLocation.objects.bulk_create(
        MessageLocation(message=message, folder=folder, uid=None, sort_date=message.sort_date)
        for folder in missing
    )
    return bool(removed or created)


def _move_in_store(message: Message, destination: Folder) -> bool:
    others = MessageLocation.objects.filter(message=message).exclude(folder=destination)
    removed, _ = others.delete()
    _, created = MessageLocation.objects.get_or_create(
        message=message,
        folder=destination,
        defaults={"uid": None, "sort_date": message.sort_date},
    )
    return bool(removed or created)


def _refuse_if_deleting(account: Account) -> None:
    if account.status == Account.Status.DELETING:
        raise ConflictError("The account is being deleted.", code="account_deleting")


def attachment_ensure_stored(*, attachment: Attachment) -> Attachment:
    """The attachment with its file stored: one the sync left out (includeAttachments false)
    is extracted from the stored raw message, so no provider round trip is needed."""
    if attachment.file and default_storage.exists(attachment.file.name):
        return attachment
    raw = RawMessage.objects.filter(pk=attachment.message_id).first()
    if raw is None:
        raise AttachmentUnavailable("the raw message is not stored")
    work_dir = process_temp_dir()
    with tempfile.TemporaryDirectory(prefix="attachment-", dir=work_dir) as tmp:
        parsed = _parse_stored_raw(raw, Path(tmp))
        part = next((a for a in parsed.attachments if a.part_path == attachment.part_path), None)
        if part is None:
            raise AttachmentUnavailable(f"part {attachment.part_path} is not in the raw message")
        name = attachment_file_store(part)
    Attachment.objects.filter(pk=attachment.pk).update(
        file=name, sha256=part.sha256, size=part.size
    )
    attachment.file.name = name
    attachment.sha256 = part.sha256
    attachment.size = part.size
    return attachment


def _parse_stored_raw(raw: RawMessage, work_dir: Path) -> ParsedMessage:
    if raw.size <= settings.LARGE_MESSAGE_BYTES:
        return parse_message(raw.content())
    path = work_dir / "raw.eml"
    raw.save_to(path)
    return parse_message_file(path, spill_dir=work_dir)
