"""The message store."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path

import zstandard
from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import BrinIndex, GinIndex
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.db import models
from django.db.models import Q
from django.db.models.functions import Left, Upper

from emailplatform.object_storage import read_range

# A zstd frame starts with these bytes; a zlib stream never does (its first byte is 0x?8).
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# Bodies past this many characters are not indexed (a tsvector is limited to 1 MB).
SEARCH_BODY_CHARS = 100_000


class StoredGeneratedField(models.GeneratedField):
    """A generated column that INSERT ... RETURNING leaves alone: only PostgreSQL reads the
    search vector, and returning it would ship every body's vector back to the writer."""

    db_returning = False


class Account(models.Model):
    class Provider(models.TextChoices):
        IMAP = "imap", "IMAP / SMTP"
        GMAIL = "gmail", "Gmail API"
        LOCAL = "local", "Local (imported mail only)"

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"
        AUTH_ERROR = "auth_error", "Authentication failed"
        ERROR = "error", "Error"
        DELETING = "deleting", "Being deleted"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mail_accounts"
    )
    provider = models.CharField(max_length=16, choices=Provider.choices)
    email_address = models.EmailField(max_length=320)
    display_name = models.CharField(max_length=255, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    last_error = models.TextField(blank=True, help_text="Readable reason of the last failure.")
    last_error_at = models.DateTimeField(null=True, blank=True)
    last_sync_at = models.DateTimeField(null=True, blank=True)
    sync_settings = models.JSONField(
        default=dict,
        blank=True,
        help_text="includeAttachments, skipFolders, windowDays, ...",
    )
    credentials_encrypted = models.BinaryField(
        blank=True, default=b"", editable=False, help_text="Fernet token; see messages.crypto."
    )
    auth_failures = models.PositiveIntegerField(
        default=0, help_text="Logins refused in a row (resets when one succeeds)."
    )
    auth_retest_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the login of a parked (auth_error) account is tried again.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "provider", "email_address"], name="account_unique_per_owner"
            )
        ]
        indexes = [
            models.Index(fields=["status", "provider"]),
            # A provider's notice names a mailbox by address (Gmail push): any case.
            models.Index(Upper("email_address"), name="account_email_upper"),
            models.Index(
                fields=["auth_retest_at"],
                condition=Q(status="auth_error"),
                name="account_auth_retest_due",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.email_address} ({self.provider})"

    def set_credentials(self, credentials: dict) -> None:
        from .crypto import encrypt_json

        self.credentials_encrypted = encrypt_json(credentials)

    def get_credentials(self) -> dict:
        from .crypto import decrypt_json

        if not self.credentials_encrypted:
            return {}
        return decrypt_json(bytes(self.credentials_encrypted))


class Folder(models.Model):
    """An IMAP folder or a Gmail label."""

    class Role(models.TextChoices):
        INBOX = "inbox"
        SENT = "sent"
        DRAFTS = "drafts"
        TRASH = "trash"
        SPAM = "spam"
        ARCHIVE = "archive"
        ALL = "all"
        IMPORTANT = "important"
        FLAGGED = "flagged"
        CUSTOM = "custom"

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="folders")
    name = models.CharField(max_length=1024, help_text="Provider name: IMAP path or label id.")
    display_name = models.CharField(max_length=1024)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.CUSTOM)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    delimiter = models.CharField(max_length=4, blank=True)
    uidvalidity = models.BigIntegerField(null=True, blank=True)
    uidnext = models.BigIntegerField(null=True, blank=True)
    highest_modseq = models.BigIntegerField(null=True, blank=True)
    sync_state = models.JSONField(default=dict, blank=True, help_text="Checkpoint of the sync.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "name"], name="folder_unique_name")
        ]

    def __str__(self) -> str:
        return self.display_name or self.name


class Thread(models.Model):
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="threads")
    provider_thread_id = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    subject = models.TextField(blank=True)
    snippet = models.TextField(blank=True)
    message_count = models.PositiveIntegerField(default=0)
    last_message_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account", "provider_thread_id"],
                condition=Q(provider_thread_id__isnull=False),
                name="thread_unique_provider_id",
            )
        ]
        indexes = [models.Index(fields=["account", "-last_message_at"])]

    def __str__(self) -> str:
        return self.subject or f"thread {self.pk}"


class ThreadReference(models.Model):
    """A Message-ID seen in a thread (sent or referenced): how late parents find their children."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE)
    message_id_header = models.CharField(max_length=998)
    thread = models.ForeignKey(Thread, on_delete=models.CASCADE, related_name="references")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account", "message_id_header"], name="threadref_unique_id"
            )
        ]

    def __str__(self) -> str:
        return self.message_id_header


class Message(models.Model):
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="messages")
    thread = models.ForeignKey(Thread, on_delete=models.RESTRICT, related_name="messages")
    provider_id = models.CharField(
        max_length=255, help_text="Gmail id, X-GM-MSGID, or derived from Message-ID / content."
    )
    server_ids = ArrayField(
        models.CharField(max_length=255),
        default=list,
        blank=True,
        help_text="The server's ids of the message, kept across moves, copies and UIDVALIDITY "
        "changes: oid:<EMAILID> (RFC 8474), guid:<X-GUID> (Dovecot) or gm:<X-GM-MSGID>. "
        "Several when the server holds identical copies under ids of their own.",
    )
    message_id_header = models.CharField(max_length=998, blank=True)
    in_reply_to = models.CharField(max_length=998, blank=True)
    references = models.JSONField(default=list, blank=True)
    subject = models.TextField(blank=True)
    from_name = models.CharField(max_length=998, blank=True)
    from_address = models.CharField(max_length=998, blank=True)
    to = models.JSONField(default=list, blank=True, help_text='[{"name", "address"}]')
    cc = models.JSONField(default=list, blank=True)
    bcc = models.JSONField(default=list, blank=True)
    reply_to = models.JSONField(default=list, blank=True)
    date = models.DateTimeField(null=True, blank=True, help_text="The Date header.")
    internal_date = models.DateTimeField(null=True, blank=True, help_text="Provider's date.")
    sort_date = models.DateTimeField(help_text="Date, else internal date, else ingestion time.")
    snippet = models.CharField(max_length=255, blank=True)
    body_text = models.TextField(blank=True)
    body_html = models.TextField(blank=True, help_text="As received; sanitize before showing.")
    size = models.PositiveIntegerField(default=0)
    is_read = models.BooleanField(default=False)
    is_flagged = models.BooleanField(default=False)
    is_answered = models.BooleanField(default=False)
    is_draft = models.BooleanField(default=False)
    flags_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the flags above were last read from the provider or changed by a client: "
        "a batch fetched before this does not overwrite them.",
    )
    has_attachments = models.BooleanField(default=False)
    defects = models.JSONField(default=list, blank=True, help_text="Parse problems found.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Computed by PostgreSQL on every insert and update, so no writer has to maintain it.
    # Config 'simple' (no stemming): mail mixes languages, and names must match as typed.
    search_vector = StoredGeneratedField(
        expression=(
            SearchVector("subject", weight="A", config="simple")
            + SearchVector("from_name", "from_address", weight="B", config="simple")
            + SearchVector(Left("body_text", SEARCH_BODY_CHARS), weight="C", config="simple")
        ),
        output_field=SearchVectorField(),
        db_persist=True,
    )

    class Meta:
        # Operators see mail metadata (who, when, subject, flags, sizes) with the model's view
        # permission; bodies, raw sources and attachments need this one too (see admin.py).
        permissions = [
            ("read_mail_content", "Can read mail content (bodies, raw sources, attachments)")
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "provider_id"], name="message_unique_provider_id"
            )
        ]
        indexes = [
            models.Index(fields=["account", "-sort_date"], name="message_account_newest"),
            models.Index(fields=["thread", "sort_date"], name="message_thread_order"),
            models.Index(fields=["account", "message_id_header"], name="message_account_msgid"),
            GinIndex(fields=["server_ids"], name="message_server_ids"),
            # Rows a server gave no id for: while an account has some, its identity pass
            # also asks for Message-IDs (messages.mailbox.locations_attach_known).
            models.Index(
                fields=["account"], condition=Q(server_ids=[]), name="message_without_server_id"
            ),
            # btree_gin: the account first, so a word frequent across all accounts costs only
            # this account's matches; a search without an account uses the second column alone.
            GinIndex(fields=["account", "search_vector"], name="message_account_search"),
            # Messages stored per hour (the admin's overview): rows are appended in time order,
            # so a BRIN index finds the last day's few blocks for almost no upkeep on insert.
            # autosummarize: autovacuum summarizes each filled block range (an unsummarized
            # range matches every query, and the scan reads it all).
            BrinIndex(fields=["created_at"], name="message_created_brin", autosummarize=True),
        ]

    def __str__(self) -> str:
        return self.subject or "(no subject)"


class MessageLocation(models.Model):
    """A message's presence in a folder (or label), with its IMAP UID there."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="locations")
    folder = models.ForeignKey(Folder, on_delete=models.CASCADE, related_name="locations")
    uid = models.BigIntegerField(null=True, blank=True)
    sort_date = models.DateTimeField(help_text="Copy of the message's, for the folder index.")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["message", "folder"],
                condition=Q(uid__isnull=True),
                name="location_unique_without_uid",
            ),
            models.UniqueConstraint(
                fields=["folder", "uid"], condition=Q(uid__isnull=False), name="location_unique_uid"
            ),
        ]
        # A folder's list in the API's order: PostgreSQL walks it and stops at the page.
        indexes = [
            models.Index(
                fields=["folder", "-sort_date", "-message"], name="location_folder_newest_page"
            )
        ]

    def __str__(self) -> str:
        """Reads like "INBOX, UID 4" (select_related("folder") where many are shown)."""
        where = self.folder.display_name or self.folder.name
        return f"{where}, UID {self.uid}" if self.uid is not None else where


def attachment_path(instance: Attachment, filename: str) -> str:
    return f"attachments/{instance.sha256[:2]}/{instance.sha256}"


class Attachment(models.Model):
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="attachments")
    part_path = models.CharField(max_length=64, help_text="MIME part number, e.g. 2.1.")
    filename = models.CharField(max_length=1024, blank=True)
    content_type = models.CharField(max_length=255)
    size = models.PositiveBigIntegerField(default=0)
    content_id = models.CharField(max_length=998, blank=True)
    is_inline = models.BooleanField(default=False)
    sha256 = models.CharField(max_length=64, blank=True)
    file = models.FileField(upload_to=attachment_path, max_length=255, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "part_path"], name="attachment_unique_part")
        ]

    def __str__(self) -> str:
        return self.filename or self.content_type

    @property
    def is_stored(self) -> bool:
        return bool(self.file)


class RawMessage(models.Model):
    """The message as received, compressed: nothing is lost, and it can be re-parsed.

    The bytes live in the media storage, not in the database: an ingested batch's messages
    are written as one segment file (one write and one fsync a batch; each message its own
    zstd frame at `offset`, `length` bytes long), a big message as a file of its own. Kept
    out of PostgreSQL, they cost no WAL, no TOAST and no database time during a sync (their
    INSERT was a third of a full sync's database time). A segment is removed once no row
    names it. A batch whose compressed messages add up to at most RAW_IN_ROW_MAX_BYTES (the
    one new message an IDLE notice brings) keeps them in `data` instead, zstd: one fsync (the
    commit's) rather than two. Rows from before the segments keep theirs zlib'd in `data`."""

    message = models.OneToOneField(
        Message, on_delete=models.CASCADE, primary_key=True, related_name="raw"
    )
    data = models.BinaryField(blank=True, default=b"")
    file = models.FileField(max_length=255, blank=True, default="")
    offset = models.PositiveBigIntegerField(default=0)
    length = models.PositiveBigIntegerField(null=True, blank=True)  # None: to the file's end
    size = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)

    # zstd level 1: 11x faster than zlib's fastest level, and smaller (measured on the bench
    # mix: 579 against 50 MB/s, ratio 0.66 against 0.68).
    COMPRESSION_LEVEL = 1
    CHUNK_BYTES = 1024 * 1024

    def __str__(self) -> str:
        return f"raw message {self.message_id} ({self.size} bytes)"

    @classmethod
    def compress(cls, raw: bytes) -> bytes:
        return zstandard.ZstdCompressor(level=cls.COMPRESSION_LEVEL).compress(raw)

    @classmethod
    def compress_file(cls, source: Path, destination: Path) -> None:
        with source.open("rb") as src, destination.open("wb") as dst:
            zstandard.ZstdCompressor(level=cls.COMPRESSION_LEVEL).copy_stream(src, dst)

    def chunks(self) -> Iterator[bytes]:
        """The raw bytes, decompressed piece by piece."""
        if not self.file:
            data = bytes(self.data)
            if data.startswith(ZSTD_MAGIC):
                yield zstandard.ZstdDecompressor().decompressobj().decompress(data)
            else:
                yield zlib.decompress(data)
            return
        decompressor = zstandard.ZstdDecompressor().decompressobj()
        # One message of a segment: on S3 a ranged GET of its bytes, not the whole segment.
        for block in read_range(
            self.file.name,
            self.offset,
            self.length,
            storage=self.file.storage,
            chunk_bytes=self.CHUNK_BYTES,
        ):
            yield decompressor.decompress(block)

    def content(self) -> bytes:
        return b"".join(self.chunks())

    def head(self) -> bytes:
        """The header block (up to the first blank line), without reading a big body."""
        seen = b""
        for chunk in self.chunks():
            seen += chunk
            ends = [seen.find(sep) + len(sep) for sep in (b"\r\n\r\n", b"\n\n") if sep in seen]
            if ends:
                return seen[: min(ends)]
        return seen

    def save_to(self, path: Path) -> None:
        with path.open("wb") as handle:
            for chunk in self.chunks():
                handle.write(chunk)


class SyncRun(models.Model):
    class Kind(models.TextChoices):
        FULL = "full"
        INCREMENTAL = "incremental"
        IMPORT = "import"

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        INTERRUPTED = "interrupted"  # its worker died (or lost the account's lock) mid-pass

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="sync_runs")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(null=True, blank=True)
    created = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    damaged = models.PositiveIntegerField(default=0)
    deleted = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["account", "-started_at"]),
            models.Index(
                fields=["started_at"], condition=Q(status="running"), name="syncrun_running"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} sync of {self.account_id} ({self.status})"


class IngestBatch(models.Model):
    """A batch of new mail on its way through `email_new_message`, from publish until stored.

    The row is the batch's right to be written: the consumer stores only a batch whose row
    exists and is not yet stored, only the UIDs (Gmail: the provider ids) the row still lists,
    and marks it stored in the same transaction (see messages.batch_store for the rules). Its
    producer deletes it once it has read the outcome; rows left by a producer that died are
    voided by the account's next sync pass, and pruned by the storage sweep."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="+")
    sync_run = models.ForeignKey(
        SyncRun, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    folder = models.ForeignKey(
        Folder, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    uidvalidity = models.BigIntegerField(null=True, blank=True)
    uids = ArrayField(models.BigIntegerField(), default=list, blank=True)
    provider_ids = ArrayField(
        models.CharField(max_length=255),
        null=True,
        blank=True,
        help_text="A batch keyed by provider ids (Gmail): the ids it may still store. "
        "None: a folder batch (UIDs) or one nobody removes from (import).",
    )
    staged = ArrayField(
        models.CharField(max_length=255),
        default=list,
        blank=True,
        help_text="Blobs its big messages travel in (removed once it is stored or void).",
    )
    publisher = models.CharField(max_length=64, help_text="Who waits for it (a notify key).")
    fetched_at = models.DateTimeField(help_text="When the producer read it from the provider.")
    claimed_at = models.DateTimeField(null=True, blank=True)
    stored_at = models.DateTimeField(null=True, blank=True)
    dead_letters = models.PositiveIntegerField(default=0)
    dead_letter_uids = ArrayField(models.BigIntegerField(), default=list, blank=True)
    dead_letter_provider_ids = ArrayField(
        models.CharField(max_length=255), default=list, blank=True
    )
    problems = models.TextField(blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["account", "folder"],
                condition=Q(stored_at__isnull=True),
                name="ingestbatch_in_flight",
            ),
            models.Index(fields=["fetched_at"], name="ingestbatch_age"),
        ]

    def __str__(self) -> str:
        return f"batch {self.pk} of account {self.account_id} ({len(self.uids)} UIDs)"


class DeadLetter(models.Model):
    """A queue payload that broke the contract, kept with the reason for an operator."""

    task_name = models.CharField(max_length=255)
    account_id = models.BigIntegerField(null=True, blank=True)
    reason = models.TextField()
    payload = models.JSONField(null=True, blank=True)
    payload_excerpt = models.TextField(blank=True, help_text="For payloads that are not JSON.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["-created_at"])]

    def __str__(self) -> str:
        return f"{self.task_name}: {self.reason[:80]}"


class ChangeEvent(models.Model):
    """One created/updated/deleted object, written in the transaction that changed it.

    The changes feed reads these in id order. Writers take a per-owner lock before inserting
    (see messages.events), so for one owner the id order is the commit order and a reader
    holding a cursor never misses an event that commits late.
    """

    class Kind(models.TextChoices):
        CREATED = "created"
        UPDATED = "updated"
        DELETED = "deleted"

    class ObjectType(models.TextChoices):
        ACCOUNT = "account"
        FOLDER = "folder"
        THREAD = "thread"
        MESSAGE = "message"
        OUTBOUND = "outbound"
        SYNC_RUN = "sync_run"  # recorded when a run ends (succeeded, failed, interrupted)

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    account_id = models.BigIntegerField()
    object_type = models.CharField(max_length=16, choices=ObjectType.choices)
    object_id = models.BigIntegerField()
    kind = models.CharField(max_length=16, choices=Kind.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["owner", "id"], name="event_owner_cursor")]

    def __str__(self) -> str:
        return f"{self.object_type} {self.object_id} {self.kind}"


class OutboundMessage(models.Model):
    """A message the owner sends: the outbox.

    States: draft -> queued -> sending -> sent, or failed (with the reason); a draft or a queued
    message can be cancelled. `unknown` means the server may have accepted the message but the
    outcome was not saved (a crash or a cut connection after DATA): it is never resent blindly,
    the sender looks for `message_id_header` in the account's Sent folder first. Per-recipient
    outcomes (accepted, rejected, then delivered/delayed/bounced from DSNs) are in `recipients`.

    `message_id_header` and `envelope_id` are fixed at creation; `raw` is built once, when the
    message is queued, so every attempt sends the same bytes.
    """

    class State(models.TextChoices):
        DRAFT = "draft"
        QUEUED = "queued"
        SENDING = "sending"
        UNKNOWN = "unknown"
        SENT = "sent"
        FAILED = "failed"
        CANCELLED = "cancelled"

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="outbound")
    state = models.CharField(max_length=16, choices=State.choices, default=State.DRAFT)
    message_id_header = models.CharField(max_length=998, unique=True)
    envelope_id = models.CharField(max_length=100, unique=True, help_text="SMTP ENVID (RFC 3461).")
    from_name = models.CharField(max_length=998, blank=True)
    from_address = models.CharField(max_length=998)
    to = models.JSONField(default=list, blank=True, help_text='[{"name", "address"}]')
    cc = models.JSONField(default=list, blank=True)
    bcc = models.JSONField(default=list, blank=True)
    subject = models.TextField(blank=True)
    body_text = models.TextField(blank=True)
    body_html = models.TextField(blank=True)
    reply_to_message = models.ForeignKey(
        Message, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    forward_of = models.ForeignKey(
        Message, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    in_reply_to = models.CharField(max_length=998, blank=True)
    references = models.JSONField(default=list, blank=True)
    notify_success = models.BooleanField(
        default=False, help_text="Ask for a DSN on successful delivery too (NOTIFY=SUCCESS)."
    )
    send_at = models.DateTimeField(null=True, blank=True, help_text="Scheduled sending.")
    raw = models.BinaryField(blank=True, default=b"", help_text="The MIME bytes, once queued.")
    size = models.PositiveIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, help_text="Readable reason of the last failure.")
    queued_at = models.DateTimeField(null=True, blank=True)
    sending_at = models.DateTimeField(null=True, blank=True, help_text="Start of the attempt.")
    sent_at = models.DateTimeField(null=True, blank=True)
    sent_message = models.ForeignKey(
        Message,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The stored copy (in Sent).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            models.Index(fields=["account", "-created_at"], name="outbound_account_recent"),
            models.Index(
                fields=["next_attempt_at"],
                name="outbound_due",
                condition=Q(state__in=["queued", "sending", "unknown"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.subject or '(no subject)'} [{self.state}]"


class OutboundRecipient(models.Model):
    """One envelope recipient of an outbound message, and what became of it."""

    class Kind(models.TextChoices):
        TO = "to"
        CC = "cc"
        BCC = "bcc"

    class Status(models.TextChoices):
        PENDING = "pending"
        ACCEPTED = "accepted", "accepted by the server"
        REJECTED = "rejected", "refused by the server"
        DELIVERED = "delivered"
        RELAYED = "relayed"
        EXPANDED = "expanded"
        DELAYED = "delayed"
        BOUNCED = "bounced"

    outbound = models.ForeignKey(
        OutboundMessage, on_delete=models.CASCADE, related_name="recipients"
    )
    kind = models.CharField(max_length=3, choices=Kind.choices)
    name = models.CharField(max_length=998, blank=True)
    address = models.CharField(max_length=998)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    smtp_code = models.PositiveSmallIntegerField(null=True, blank=True)
    smtp_reply = models.TextField(blank=True, help_text="The sending server's answer at RCPT.")
    action = models.CharField(max_length=16, blank=True, help_text="DSN Action.")
    status_code = models.CharField(max_length=16, blank=True, help_text="DSN Status, e.g. 5.1.1.")
    diagnostic_code = models.TextField(blank=True)
    remote_mta = models.CharField(max_length=998, blank=True)
    reported_at = models.DateTimeField(null=True, blank=True, help_text="When the DSN said so.")
    report_message = models.ForeignKey(
        Message,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The DSN or bounce mail.",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["outbound", "address"], name="outbound_recipient_once")
        ]

    def __str__(self) -> str:
        return f"{self.address} ({self.status})"


def outbound_attachment_path(instance: OutboundAttachment, filename: str) -> str:
    return f"outbound/{instance.sha256[:2]}/{instance.sha256}"


class OutboundAttachment(models.Model):
    """A file sent with an outbound message: uploaded, or a stored attachment forwarded."""

    outbound = models.ForeignKey(
        OutboundMessage, on_delete=models.CASCADE, related_name="attachments"
    )
    filename = models.CharField(max_length=1024, blank=True)
    content_type = models.CharField(max_length=255)
    size = models.PositiveBigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True)
    file = models.FileField(upload_to=outbound_attachment_path, max_length=255, blank=True)
    source = models.ForeignKey(
        Attachment,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The stored attachment forwarded.",
    )

    def __str__(self) -> str:
        return self.filename or self.content_type


class DeliveryReport(models.Model):
    """A received message found to be a delivery report: an RFC 3464 DSN or another MTA's
    bounce. `outbound` is None for a report that matches nothing the platform sent."""

    class Kind(models.TextChoices):
        DSN = "dsn", "RFC 3464 delivery status notification"
        BOUNCE = "bounce", "non-standard bounce"

    message = models.OneToOneField(
        Message, on_delete=models.CASCADE, related_name="delivery_report"
    )
    kind = models.CharField(max_length=8, choices=Kind.choices)
    outbound = models.ForeignKey(
        OutboundMessage,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="reports",
    )
    matched_by = models.CharField(
        max_length=16, blank=True, help_text="envelope_id, message_id or in_reply_to."
    )
    recipients = models.JSONField(default=list, blank=True, help_text="What the report says.")
    envelope_id = models.CharField(max_length=100, blank=True, help_text="Original-Envelope-Id.")
    original_message_id = models.CharField(
        max_length=998, blank=True, help_text="Message-ID of the returned message."
    )
    reporting_mta = models.CharField(max_length=998, blank=True)
    defects = models.JSONField(
        default=list, blank=True, help_text="What was damaged or missing in the report."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.kind} for message {self.message_id}"
