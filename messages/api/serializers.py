"""Explicit input and output serializers: inputs validate, outputs shape. No logic here.

Secrets (password, oauth2_token) exist only in input serializers, write-only: no output
serializer has a field that could carry them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import cache
from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_field
from rest_framework import serializers

from messages import providers, selectors
from messages.models import Account, Attachment, ChangeEvent, Folder, Message, Thread

from .fields import QueryBooleanField, StrictJsonInput
from .schema import MAX_ID


# Authentication ----------------------------------------------------------------------------
class TokenInput(StrictJsonInput):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(
        max_length=4096, write_only=True, trim_whitespace=False, style={"input_type": "password"}
    )


class TokenOutput(serializers.Serializer):
    token = serializers.CharField(help_text='Send it as "Authorization: Token <token>".')
    expiry = serializers.DateTimeField(
        allow_null=True, help_text="When the token stops working (log in again for a new one)."
    )


# Accounts ----------------------------------------------------------------------------------
class SyncSettings(StrictJsonInput):
    """How the account is synced; every key is optional.

    snake_case here like the rest of the API; stored (and carried in the topics) under the
    topic contract's camelCase keys, the fields' sources."""

    include_attachments = serializers.BooleanField(
        source="includeAttachments",
        required=False,
        help_text="Store attachment files while syncing (else fetched on demand).",
    )
    skip_folders = serializers.ListField(
        source="skipFolders",
        child=serializers.CharField(max_length=1024),
        required=False,
        max_length=1000,
        help_text="Folder names not to sync.",
    )
    window_days = serializers.IntegerField(
        source="windowDays",
        required=False,
        allow_null=True,
        min_value=1,
        max_value=36500,
        help_text="Sync only mail of the last N days (null: everything).",
    )
    backfill = serializers.BooleanField(
        required=False, help_text="After the window, go on with older mail."
    )
    send_per_minute = serializers.IntegerField(
        source="sendPerMinute",
        required=False,
        min_value=0,
        max_value=100000,
        help_text="Outbound messages sent per minute at most (0: no limit); excess waits.",
    )
    send_per_day = serializers.IntegerField(
        source="sendPerDay",
        required=False,
        min_value=0,
        max_value=10000000,
        help_text="Outbound messages sent per day at most (0: no limit); excess waits.",
    )
    save_sent_copy = serializers.BooleanField(
        source="saveSentCopy",
        required=False,
        help_text=(
            "IMAP accounts: put a copy of each sent message in Sent (default: yes, except for "
            "servers that file sent mail themselves, e.g. Gmail)."
        ),
    )


class SyncProgress(serializers.Serializer):
    kind = serializers.CharField()
    done = serializers.IntegerField()
    total = serializers.IntegerField(allow_null=True)


class AccountOutput(serializers.Serializer):
    id = serializers.IntegerField()
    provider = serializers.CharField()
    email_address = serializers.EmailField()
    display_name = serializers.CharField()
    status = serializers.ChoiceField(choices=Account.Status.choices)
    last_error = serializers.CharField(help_text="Readable reason of the last failure.")
    last_error_at = serializers.DateTimeField(allow_null=True)
    last_sync_at = serializers.DateTimeField(allow_null=True)
    sync_settings = serializers.SerializerMethodField()
    sync_progress = serializers.SerializerMethodField()
    settings = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    @extend_schema_field(SyncSettings)
    def get_sync_settings(self, account: Account) -> dict[str, Any]:
        stored = account.sync_settings if isinstance(account.sync_settings, dict) else {}
        fields = SyncSettings().fields
        stored_as = {field.source: name for name, field in fields.items()}
        readable = {stored_as[key]: value for key, value in stored.items() if key in stored_as}
        serializer = SyncSettings(data=readable)
        if not serializer.is_valid():
            return {}
        return {stored_as[key]: value for key, value in serializer.validated_data.items()}

    @extend_schema_field(SyncProgress(allow_null=True))
    def get_sync_progress(self, account: Account) -> dict[str, Any] | None:
        kind = getattr(account, "running_sync_kind", None)
        if kind is None:
            return None
        return {
            "kind": kind,
            "done": account.running_sync_done or 0,
            "total": account.running_sync_total,
        }

    @extend_schema_field(
        {
            "type": "object",
            "additionalProperties": True,
            "description": "The provider's server settings (never a secret).",
        }
    )
    def get_settings(self, account: Account) -> dict[str, Any]:
        try:
            adapter = providers.get_adapter(account.provider)
        except providers.UnknownProvider:
            return {}
        return adapter.describe(account)


class AccountCreateBase(StrictJsonInput):
    email_address = serializers.EmailField(max_length=320)
    display_name = serializers.CharField(
        max_length=255, required=False, allow_blank=True, default=""
    )
    password = serializers.CharField(
        max_length=4096,
        required=False,
        allow_blank=True,
        write_only=True,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="Write-only: stored encrypted, never returned.",
    )
    oauth2_token = serializers.CharField(
        max_length=8192,
        required=False,
        allow_blank=True,
        write_only=True,
        trim_whitespace=False,
        help_text="Write-only, instead of a password (XOAUTH2).",
    )
    sync_settings = SyncSettings(required=False)

    provider_name = ""

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        adapter = providers.get_adapter(self.provider_name)
        if adapter.requires_credentials and not (
            attrs.get("password") or attrs.get("oauth2_token")
        ):
            raise serializers.ValidationError({"password": ["Give a password or an oauth2_token."]})
        if not adapter.requires_credentials and (
            attrs.get("password") or attrs.get("oauth2_token")
        ):
            raise serializers.ValidationError(
                {"password": [f"{self.provider_name} accounts have no credentials."]}
            )
        attrs.setdefault("settings", {})
        return attrs


@cache
def account_create_input(provider_name: str) -> type[AccountCreateBase]:
    """The creation input of one provider: common fields plus its own `settings`."""
    adapter = providers.get_adapter(provider_name)
    settings_required = bool(adapter.settings_serializer().fields) and any(
        field.required for field in adapter.settings_serializer().fields.values()
    )
    prefix = "".join(part.capitalize() for part in provider_name.split("_"))
    return type(
        f"{prefix}AccountCreateInput",
        (AccountCreateBase,),
        {
            "provider": serializers.ChoiceField(choices=[provider_name]),
            "settings": adapter.settings_serializer(required=settings_required),
            "provider_name": provider_name,
            "__doc__": f"A new {provider_name} account.",
        },
    )


def account_create_request() -> PolymorphicProxySerializer:
    """The POST body for the schema: one variant per registered provider."""
    return PolymorphicProxySerializer(
        component_name="AccountCreateInput",
        serializers=lambda: {
            name: account_create_input(name) for name in providers.provider_names()
        },
        resource_type_field_name="provider",
    )


class ProviderChoice(StrictJsonInput):
    provider = serializers.CharField(max_length=32)

    def validate_provider(self, value: str) -> str:
        if value not in providers.provider_names():
            names = ", ".join(providers.provider_names())
            raise serializers.ValidationError(f"Unknown provider {value!r}; one of: {names}.")
        return value


class AccountUpdateInput(StrictJsonInput):
    display_name = serializers.CharField(max_length=255, required=False, allow_blank=True)
    sync_settings = SyncSettings(
        required=False, help_text="Merged into the stored settings: keys not given stay."
    )
    password = serializers.CharField(
        max_length=4096,
        required=False,
        write_only=True,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="Write-only: a new password, tested against the server before it is stored.",
    )
    oauth2_token = serializers.CharField(
        max_length=8192, required=False, write_only=True, trim_whitespace=False
    )


class SyncInput(StrictJsonInput):
    full = serializers.BooleanField(
        default=False, help_text="A full sync (else incremental: only what changed)."
    )


class SyncQueued(serializers.Serializer):
    queued = serializers.BooleanField()
    full = serializers.BooleanField()


class AuthorizationStarted(serializers.Serializer):
    authorization_url = serializers.URLField(
        help_text="Open it in the user's browser: the provider's consent screen, which sends "
        "the browser back to this platform to finish (single use, expires in minutes)."
    )


class ConnectionOk(serializers.Serializer):
    ok = serializers.BooleanField()


class AccountDeletion(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=Account.Status.choices)


# Folders -----------------------------------------------------------------------------------
class FolderOutput(serializers.Serializer):
    id = serializers.IntegerField()
    account = serializers.IntegerField(source="account_id")
    name = serializers.CharField(help_text="The provider's name (IMAP path); use it to move mail.")
    display_name = serializers.CharField()
    role = serializers.ChoiceField(choices=Folder.Role.choices)
    parent = serializers.IntegerField(source="parent_id", allow_null=True)
    total = serializers.IntegerField(source="total_count")
    unread = serializers.IntegerField(source="unread_count")


# People, messages, attachments -------------------------------------------------------------
class Person(serializers.Serializer):
    name = serializers.CharField(allow_blank=True)
    address = serializers.CharField(allow_blank=True)


def _people(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list):
        return []
    return [
        {"name": str(p.get("name") or ""), "address": str(p.get("address") or "")}
        for p in value
        if isinstance(p, dict)
    ]


class AttachmentOutput(serializers.Serializer):
    id = serializers.IntegerField()
    filename = serializers.CharField()
    content_type = serializers.CharField()
    size = serializers.IntegerField()
    content_id = serializers.CharField(help_text="For inline images referenced as cid: URLs.")
    is_inline = serializers.BooleanField()
    stored = serializers.BooleanField(
        source="is_stored", help_text="False: fetched on demand by the first download."
    )
    download_url = serializers.SerializerMethodField()

    @extend_schema_field(OpenApiTypes.URI)
    def get_download_url(self, attachment: Attachment) -> str:
        return attachment_url(self.context["request"], attachment.pk)


def attachment_url(request: Any, attachment_id: int) -> str:
    return request.build_absolute_uri(reverse("api:attachment-download", args=[attachment_id]))


class MessageSummaryOutput(serializers.Serializer):
    id = serializers.IntegerField()
    account = serializers.IntegerField(source="account_id")
    thread = serializers.IntegerField(source="thread_id")
    subject = serializers.CharField()
    sender = serializers.SerializerMethodField(method_name="get_from")
    to = serializers.SerializerMethodField()
    cc = serializers.SerializerMethodField()
    date = serializers.DateTimeField(allow_null=True, help_text="The Date header.")
    sort_date = serializers.DateTimeField(help_text="Date, else the provider's, else arrival.")
    snippet = serializers.CharField()
    is_read = serializers.BooleanField()
    is_flagged = serializers.BooleanField()
    is_answered = serializers.BooleanField()
    is_draft = serializers.BooleanField()
    has_attachments = serializers.BooleanField()
    size = serializers.IntegerField()
    folders = serializers.SerializerMethodField()

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        fields["from"] = fields.pop("sender")
        return fields

    @extend_schema_field(Person)
    def get_from(self, message: Message) -> dict[str, str]:
        return {"name": message.from_name, "address": message.from_address}

    @extend_schema_field(Person(many=True))
    def get_to(self, message: Message) -> list[dict[str, str]]:
        return _people(message.to)

    @extend_schema_field(Person(many=True))
    def get_cc(self, message: Message) -> list[dict[str, str]]:
        return _people(message.cc)

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_folders(self, message: Message) -> list[str]:
        return sorted({location.folder.name for location in message.locations.all()})


def _iso_writer() -> Callable[[datetime | None], str | None]:
    """Dates as DRF's DateTimeField writes them: in the current time zone, UTC as "Z"."""
    zone = timezone.get_current_timezone()

    def iso(value: datetime | None) -> str | None:
        if value is None:
            return None
        text = value.astimezone(zone).isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text

    return iso


def message_summaries(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """MessageSummaryOutput of rows of messages.message_page, without DRF's
    per-field machinery (a list's page costs a tenth of it): the same output, field for field."""
    iso = _iso_writer()
    return [
        {
            "id": row["id"],
            "account": row["account_id"],
            "thread": row["thread_id"],
            "subject": row["subject"],
            "from": {"name": row["from_name"], "address": row["from_address"]},
            "to": _people(row["to"]),
            "cc": _people(row["cc"]),
            "date": iso(row["date"]),
            "sort_date": iso(row["sort_date"]),
            "snippet": row["snippet"],
            "is_read": row["is_read"],
            "is_flagged": row["is_flagged"],
            "is_answered": row["is_answered"],
            "is_draft": row["is_draft"],
            "has_attachments": row["has_attachments"],
            "size": row["size"],
            "folders": row["folder_names"],
        }
        for row in rows
    ]


class ReportedRecipientOutput(serializers.Serializer):
    address = serializers.CharField(help_text="Final-Recipient, else Original-Recipient.")
    original_address = serializers.CharField(allow_blank=True)
    action = serializers.CharField(
        allow_blank=True, help_text="failed, delayed, delivered, relayed or expanded."
    )
    status = serializers.CharField(allow_blank=True, help_text="e.g. 5.1.1")
    diagnostic_code = serializers.CharField(allow_blank=True)
    remote_mta = serializers.CharField(allow_blank=True)
    last_attempt = serializers.CharField(allow_null=True)
    recipient = serializers.CharField(
        allow_null=True, help_text="The outbound recipient this updated (null: none)."
    )


class DeliveryReportOutput(serializers.Serializer):
    """A received message found to be a delivery report (on the message, and on the outbound
    message it reports on)."""

    id = serializers.IntegerField()
    message = serializers.IntegerField(source="message_id", help_text="The report mail.")
    kind = serializers.ChoiceField(
        choices=["dsn", "bounce"], help_text="dsn: RFC 3464; bounce: another MTA's format."
    )
    outbound = serializers.IntegerField(
        source="outbound_id", allow_null=True, help_text="The outbound message it reports on."
    )
    matched_by = serializers.CharField(
        allow_blank=True, help_text="envelope_id, message_id or in_reply_to."
    )
    recipients = ReportedRecipientOutput(many=True)
    defects = serializers.ListField(child=serializers.CharField())
    created_at = serializers.DateTimeField()


class MessageDetailOutput(MessageSummaryOutput):
    bcc = serializers.SerializerMethodField()
    reply_to = serializers.SerializerMethodField()
    message_id = serializers.CharField(source="message_id_header")
    in_reply_to = serializers.CharField()
    references = serializers.ListField(child=serializers.CharField())
    internal_date = serializers.DateTimeField(allow_null=True)
    text = serializers.CharField(source="body_text")
    html = serializers.CharField(help_text="Sanitized: safe to show (in a sandboxed frame).")
    remote_images_blocked = serializers.IntegerField(
        help_text="Remote images removed from `html`; ask again with remote_images=true."
    )
    defects = serializers.ListField(child=serializers.CharField(), help_text="Parse problems.")
    attachments = AttachmentOutput(many=True)
    raw_url = serializers.URLField(help_text="The message as received (.eml).")
    delivery_report = serializers.SerializerMethodField(
        help_text="Set when the message is a delivery status notification or a bounce."
    )
    raw_headers = serializers.ListField(
        child=serializers.ListField(child=serializers.CharField(), min_length=2, max_length=2),
        required=False,
        help_text="Only with raw_headers=true: every header as received, [name, value].",
    )

    @extend_schema_field(Person(many=True))
    def get_bcc(self, message: Message) -> list[dict[str, str]]:
        return _people(message.bcc)

    @extend_schema_field(Person(many=True))
    def get_reply_to(self, message: Message) -> list[dict[str, str]]:
        return _people(message.reply_to)

    @extend_schema_field(DeliveryReportOutput(allow_null=True))
    def get_delivery_report(self, message: Message) -> dict[str, Any] | None:
        try:
            report = message.delivery_report
        except ObjectDoesNotExist:
            return None
        return DeliveryReportOutput(report).data


class MessageDetailQuery(serializers.Serializer):
    remote_images = QueryBooleanField(
        default=False, help_text="Keep remote (http/https) images in the HTML."
    )
    raw_headers = QueryBooleanField(
        default=False, help_text="Add every header as received, parsed from the raw message."
    )


class MessageUpdateInput(StrictJsonInput):
    is_read = serializers.BooleanField(required=False)
    is_flagged = serializers.BooleanField(required=False)
    folder = serializers.CharField(
        max_length=1024, required=False, help_text="Move to the folder of this name."
    )
    trash = serializers.BooleanField(
        required=False,
        help_text="true: move to the Trash folder; false: take it out of the trash (Gmail and "
        "local accounts; Gmail puts it back where it was).",
    )
    labels_add = serializers.ListField(
        child=serializers.CharField(max_length=1024),
        required=False,
        max_length=100,
        help_text="Folders (Gmail label ids) to add the message to, keeping the others "
        "(Gmail and local accounts).",
    )
    labels_remove = serializers.ListField(
        child=serializers.CharField(max_length=1024),
        required=False,
        max_length=100,
        help_text="Folders (Gmail label ids) to take the message out of (Gmail and local "
        "accounts).",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs:
            raise serializers.ValidationError(
                "Give is_read, is_flagged, folder, trash, labels_add or labels_remove."
            )
        return attrs


class MessageChangeQueued(serializers.Serializer):
    status = serializers.ChoiceField(choices=["queued"])
    change = MessageUpdateInput(help_text="What the provider will apply; the store follows.")


# Threads -----------------------------------------------------------------------------------
class ThreadOutput(serializers.Serializer):
    id = serializers.IntegerField()
    account = serializers.IntegerField(source="account_id")
    subject = serializers.CharField()
    snippet = serializers.CharField(help_text="Of the latest message.")
    message_count = serializers.IntegerField()
    unread_count = serializers.IntegerField()
    last_message_at = serializers.DateTimeField()
    participants = serializers.SerializerMethodField(
        help_text="The senders of the thread's messages, in order of first appearance."
    )

    @extend_schema_field(Person(many=True))
    def get_participants(self, thread: Thread) -> list[dict[str, str]]:
        return selectors.participants(thread.senders)


def thread_summaries(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """ThreadOutput of rows of selectors.THREAD_SUMMARY_COLUMNS, field for field, without
    DRF's per-field machinery (as message_summaries)."""
    iso = _iso_writer()
    return [
        {
            "id": row["id"],
            "account": row["account_id"],
            "subject": row["subject"],
            "snippet": row["snippet"],
            "message_count": row["message_count"],
            "unread_count": row["unread_count"],
            "last_message_at": iso(row["last_message_at"]),
            "participants": selectors.participants(row["senders"]),
        }
        for row in rows
    ]


class ThreadDetailOutput(ThreadOutput):
    messages = MessageSummaryOutput(many=True, source="messages.all")


# Changes feed ------------------------------------------------------------------------------
class ChangesQuery(serializers.Serializer):
    cursor = serializers.IntegerField(
        default=0,
        min_value=0,
        max_value=MAX_ID,
        help_text="The `cursor` of the previous answer; 0 or absent: from the beginning.",
    )
    limit = serializers.IntegerField(default=100, min_value=1, max_value=1000)
    wait = serializers.FloatField(
        default=0,
        min_value=0,
        max_value=selectors.CHANGES_MAX_WAIT_SECONDS,
        help_text="Long poll: wait up to this many seconds for a change when there is none.",
    )


class ChangeOutput(serializers.Serializer):
    id = serializers.IntegerField()
    type = serializers.ChoiceField(source="object_type", choices=ChangeEvent.ObjectType.choices)
    kind = serializers.ChoiceField(choices=ChangeEvent.Kind.choices)
    object_id = serializers.IntegerField()
    account_id = serializers.IntegerField()
    at = serializers.DateTimeField(source="created_at")


class ChangesOutput(serializers.Serializer):
    changes = ChangeOutput(many=True)
    cursor = serializers.IntegerField(help_text="Pass it back as `cursor` for what comes next.")
    has_more = serializers.BooleanField(help_text="More changes are waiting: ask again at once.")
