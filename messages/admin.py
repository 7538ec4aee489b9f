"""Admin for operators: thin over the store; HTML from mail is sanitized before it is shown.

Who reads what: staff see mail *metadata* (accounts, folders, threads, who wrote to whom, when,
subjects, flags, sizes) with the models' view permissions. Mail *content* (bodies, the
rendered HTML, raw sources, attachment files, and dead letters' payloads, which carry raw
mail) needs the explicit permission `mailstore.read_mail_content` as well: an operator of a
mail platform has no business reading people's mail without a reason, and granting it is a
deliberate, visible act (a user or group permission). Superusers have every permission in
Django, this one included: they can grant it to themselves anyway.
"""

from __future__ import annotations

from contextvars import ContextVar

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from emailplatform import topics
from emailplatform.object_storage import open_for_download

from .models import (
    Account,
    Attachment,
    DeadLetter,
    DeliveryReport,
    Folder,
    Message,
    MessageLocation,
    OutboundAttachment,
    OutboundMessage,
    OutboundRecipient,
    RawMessage,
    SyncRun,
    Thread,
)
from .outbox_states import outbound_cancel
from .sanitize import sanitize_mail_html
from .services import attachment_ensure_stored
from .signals import account_status_changed_send

READ_MAIL_CONTENT = "mailstore.read_mail_content"


def can_read_mail(request: HttpRequest) -> bool:
    return request.user.has_perm(READ_MAIL_CONTENT)


def _progress(run: SyncRun | None) -> str:
    if run is None or run.status != SyncRun.Status.RUNNING:
        return "-"
    if run.progress_total:
        percent = min(100, int(100 * run.progress_done / run.progress_total))
        return format_html(
            '<progress max="100" value="{}"></progress> {} / {}',
            percent,
            run.progress_done,
            run.progress_total,
        )
    return f"{run.progress_done} so far"


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = (
        "email_address",
        "provider",
        "owner",
        "status",
        "last_sync_at",
        "sync_progress",
        "short_error",
    )
    list_filter = ("provider", "status")
    search_fields = ("email_address", "display_name", "owner__username", "owner__email")
    readonly_fields = ("last_error", "last_error_at", "last_sync_at", "created_at", "updated_at")
    exclude = ("credentials_encrypted",)
    actions = ("sync_now", "pause", "resume")

    @admin.display(description="progress")
    def sync_progress(self, obj: Account) -> str:
        return _progress(obj.sync_runs.order_by("-started_at").first())

    @admin.display(description="last error")
    def short_error(self, obj: Account) -> str:
        return (obj.last_error[:80] + "...") if len(obj.last_error) > 80 else obj.last_error

    @admin.action(description="Sync now (full sync)")
    def sync_now(self, request: HttpRequest, queryset) -> None:
        published = sum(topics.publish_full_sync(a.pk, a.provider) for a in queryset)
        self.message_user(request, f"Full sync requested for {published} account(s).")

    @admin.action(description="Pause syncing")
    def pause(self, request: HttpRequest, queryset) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        count = Account.objects.filter(pk__in=ids).update(status=Account.Status.PAUSED)
        account_status_changed_send(ids, Account.Status.PAUSED)
        self.message_user(request, f"Paused {count} account(s).", messages.WARNING)

    @admin.action(description="Resume syncing")
    def resume(self, request: HttpRequest, queryset) -> None:
        ids = list(queryset.exclude(status=Account.Status.DELETING).values_list("pk", flat=True))
        count = Account.objects.filter(pk__in=ids).update(
            status=Account.Status.ACTIVE, last_error=""
        )
        account_status_changed_send(ids, Account.Status.ACTIVE)
        self.message_user(request, f"Resumed {count} account(s).")


@admin.register(Folder)
class FolderAdmin(admin.ModelAdmin):
    list_display = ("display_name", "account", "role", "uidvalidity", "uidnext", "highest_modseq")
    list_filter = ("role",)
    search_fields = ("name", "display_name", "account__email_address")
    list_select_related = ("account",)


@admin.register(Thread)
class ThreadAdmin(admin.ModelAdmin):
    list_display = ("subject", "account", "message_count", "last_message_at")
    search_fields = ("subject", "provider_thread_id")
    list_select_related = ("account",)
    date_hierarchy = "last_message_at"


class AttachmentInline(admin.TabularInline):
    model = Attachment
    extra = 0
    can_delete = False
    fields = ("filename", "content_type", "size", "is_inline", "content_id", "sha256", "file")
    readonly_fields = fields

    def get_fields(self, request: HttpRequest, obj=None):
        if can_read_mail(request):
            return self.fields
        return tuple(f for f in self.fields if f != "file")


class LocationInline(admin.TabularInline):
    model = MessageLocation
    extra = 0
    can_delete = False
    fields = ("folder", "uid")
    readonly_fields = fields


class MessageDeliveryReportInline(admin.StackedInline):
    model = DeliveryReport
    extra = 0
    can_delete = False
    fields = ("kind", "outbound", "matched_by", "recipient_lines", "defects")
    readonly_fields = fields

    @admin.display(description="recipients")
    def recipient_lines(self, obj: DeliveryReport) -> str:
        return _report_recipients(obj)


def _report_recipients(report: DeliveryReport) -> str:
    rows = [r for r in report.recipients if isinstance(r, dict)]
    return (
        format_html_join(
            "",
            "<div>{} {} {} {}</div>",
            (
                (
                    r.get("address", ""),
                    r.get("action", "") or "?",
                    r.get("status", ""),
                    r.get("diagnostic_code", ""),
                )
                for r in rows
            ),
        )
        or "-"
    )


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = (
        "subject_or_none",
        "from_address",
        "account",
        "sort_date",
        "is_read",
        "is_flagged",
        "has_attachments",
        "damaged",
    )
    list_filter = ("is_read", "is_flagged", "has_attachments", "account__provider")
    search_fields = ("subject", "from_address", "from_name", "message_id_header", "provider_id")
    list_select_related = ("account",)
    date_hierarchy = "sort_date"
    inlines = (LocationInline, AttachmentInline, MessageDeliveryReportInline)
    readonly_fields = (
        "subject",
        "from_name",
        "from_address",
        "recipients",
        "date",
        "internal_date",
        "rendered_html",
        "body_text",
        "raw_source",
        "defects",
        "size",
        "account",
        "thread",
        "provider_id",
        "message_id_header",
        "in_reply_to",
    )
    fields = (
        ("is_read", "is_flagged", "is_answered", "is_draft"),
        *readonly_fields,
    )
    # Shown only to users with READ_MAIL_CONTENT.
    content_fields = ("rendered_html", "body_text", "raw_source")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_fields(self, request: HttpRequest, obj=None):
        if can_read_mail(request):
            return self.fields
        return tuple(f for f in self.fields if f not in self.content_fields)

    def _check_content_access(self, request: HttpRequest, message: Message) -> None:
        """The raw and attachment views: the message's view permission and READ_MAIL_CONTENT
        (admin_view alone checks only is_staff)."""
        if not (self.has_view_permission(request, message) and can_read_mail(request)):
            raise PermissionDenied

    @admin.display(description="subject")
    def subject_or_none(self, obj: Message) -> str:
        return obj.subject or "(no subject)"

    @admin.display(boolean=True, description="defects")
    def damaged(self, obj: Message) -> bool:
        return bool(obj.defects)

    @admin.display(description="recipients")
    def recipients(self, obj: Message) -> str:
        people = [("To", p) for p in obj.to] + [("Cc", p) for p in obj.cc]
        return format_html_join(
            "",
            "<div>{}: {} &lt;{}&gt;</div>",
            ((kind, p.get("name", ""), p.get("address", "")) for kind, p in people),
        )

    @admin.display(description="raw source")
    def raw_source(self, obj: Message) -> str:
        url = reverse("admin:mailstore_message_raw", args=[obj.pk])
        return format_html('<a href="{}">Download .eml</a>', url)

    @admin.display(description="HTML (sanitized; remote images blocked)")
    def rendered_html(self, obj: Message) -> str:
        if not obj.body_html:
            return "-"
        base = _site_root.get()
        cid_urls = {
            a.content_id: base
            + reverse("admin:mailstore_message_attachment", args=[obj.pk, a.pk]).lstrip("/")
            for a in obj.attachments.exclude(content_id="")
        }
        sanitized = sanitize_mail_html(obj.body_html, cid_urls=cid_urls)
        return format_html(
            '<div style="border:1px solid #ccc;padding:8px;max-height:40em;overflow:auto">{}</div>',
            _safe(sanitized.html),
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # The sanitizer accepts absolute URLs only: give rendered_html this request's root.
        token = _site_root.set(request.build_absolute_uri("/"))
        try:
            response = super().change_view(request, object_id, form_url, extra_context)
            if hasattr(response, "render"):
                response.render()  # while the root is set: a TemplateResponse renders lazily
            return response
        finally:
            _site_root.reset(token)

    def get_urls(self):
        urls = [
            path(
                "<int:pk>/raw/",
                self.admin_site.admin_view(self.raw_view),
                name="mailstore_message_raw",
            ),
            path(
                "<int:pk>/attachment/<int:attachment_id>/",
                self.admin_site.admin_view(self.attachment_view),
                name="mailstore_message_attachment",
            ),
        ]
        return urls + super().get_urls()

    def attachment_view(self, request: HttpRequest, pk: int, attachment_id: int) -> HttpResponse:
        self._check_content_access(request, get_object_or_404(Message, pk=pk))
        attachment = attachment_ensure_stored(
            attachment=get_object_or_404(Attachment, pk=attachment_id, message_id=pk)
        )
        stream, size = open_for_download(attachment.file.name)
        response = FileResponse(
            stream, content_type=attachment.content_type or "application/octet-stream"
        )
        response["Content-Length"] = str(size)
        response["Content-Disposition"] = "inline" if attachment.is_inline else "attachment"
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = "default-src 'none'; sandbox"
        return response

    def raw_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        self._check_content_access(request, get_object_or_404(Message, pk=pk))
        raw = get_object_or_404(RawMessage, pk=pk)
        response = StreamingHttpResponse(raw.chunks(), content_type="message/rfc822")
        response["Content-Length"] = str(raw.size)
        response["Content-Disposition"] = f'attachment; filename="message-{pk}.eml"'
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = "sandbox; default-src 'none'"
        return response


_site_root: ContextVar[str] = ContextVar("admin_site_root", default="http://localhost/")


def _safe(html: str):
    from django.utils.safestring import mark_safe

    return mark_safe(html)  # noqa: S308  (sanitized by nh3 just before)


@admin.register(SyncRun)
class SyncRunAdmin(admin.ModelAdmin):
    list_display = (
        "account",
        "kind",
        "status",
        "started_at",
        "finished_at",
        "progress",
        "created",
        "updated",
        "damaged",
    )
    list_filter = ("kind", "status")
    search_fields = ("account__email_address", "error")
    list_select_related = ("account",)

    @admin.display(description="progress")
    def progress(self, obj: SyncRun) -> str:
        return _progress(obj)


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    list_display = ("created_at", "task_name", "account_id", "reason")
    search_fields = ("reason", "task_name")
    readonly_fields = ("task_name", "account_id", "reason", "payload", "payload_excerpt")
    # A payload carries raw mail (EmailNewMessage batches): content, not metadata.
    content_fields = ("payload", "payload_excerpt")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_fields(self, request: HttpRequest, obj=None):
        fields = super().get_fields(request, obj)
        if can_read_mail(request):
            return fields
        return [f for f in fields if f not in self.content_fields]


class OutboundRecipientInline(admin.TabularInline):
    model = OutboundRecipient
    extra = 0
    can_delete = False
    fields = (
        "kind",
        "name",
        "address",
        "status",
        "smtp_code",
        "smtp_reply",
        "action",
        "status_code",
        "diagnostic_code",
        "remote_mta",
        "reported_at",
        "report_message",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class OutboundAttachmentInline(admin.TabularInline):
    model = OutboundAttachment
    extra = 0
    can_delete = False
    fields = ("filename", "content_type", "size", "sha256", "source")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class OutboundDeliveryReportInline(admin.TabularInline):
    model = DeliveryReport
    fk_name = "outbound"
    extra = 0
    can_delete = False
    fields = ("kind", "message", "matched_by", "recipients", "created_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(OutboundMessage)
class OutboundMessageAdmin(admin.ModelAdmin):
    """Outbound mail: who sent what to whom, its state and why it failed. Composing goes through
    the API (messages.outbox checks everything there); here an operator watches and cancels.
    Bodies are mail content (READ_MAIL_CONTENT); the MIME bytes are never shown."""

    list_display = (
        "subject_or_none",
        "from_address",
        "account",
        "state",
        "attempts",
        "next_attempt_at",
        "sent_at",
        "short_error",
    )
    list_filter = ("state", "account__provider")
    search_fields = ("subject", "from_address", "message_id_header", "envelope_id")
    list_select_related = ("account",)
    date_hierarchy = "created_at"
    inlines = (OutboundRecipientInline, OutboundAttachmentInline, OutboundDeliveryReportInline)
    actions = ("cancel",)
    readonly_fields = (
        "account",
        "state",
        "last_error",
        "from_name",
        "from_address",
        "to",
        "cc",
        "bcc",
        "subject",
        "message_id_header",
        "envelope_id",
        "in_reply_to",
        "references",
        "reply_to_message",
        "forward_of",
        "notify_success",
        "send_at",
        "size",
        "attempts",
        "next_attempt_at",
        "queued_at",
        "sending_at",
        "sent_at",
        "sent_message",
        "created_at",
        "updated_at",
        "body_text",
        "body_html",
    )
    fields = readonly_fields
    content_fields = ("body_text", "body_html")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # read-only pages: the state changes through its transitions only

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("mailstore.change_outboundmessage")

    def get_fields(self, request: HttpRequest, obj=None):
        if can_read_mail(request):
            return self.fields
        return tuple(f for f in self.fields if f not in self.content_fields)

    def get_queryset(self, request: HttpRequest):
        return super().get_queryset(request).defer("raw")

    @admin.display(description="subject")
    def subject_or_none(self, obj: OutboundMessage) -> str:
        return obj.subject or "(no subject)"

    @admin.display(description="last error")
    def short_error(self, obj: OutboundMessage) -> str:
        return (obj.last_error[:80] + "...") if len(obj.last_error) > 80 else obj.last_error

    @admin.action(description="Cancel (drafts and queued messages)", permissions=["cancel"])
    def cancel(self, request: HttpRequest, queryset) -> None:
        done, too_late = 0, 0
        for outbound_id in queryset.values_list("pk", flat=True):
            if outbound_cancel(outbound_id) is None:
                too_late += 1
            else:
                done += 1
        self.message_user(request, f"Cancelled {done} message(s).")
        if too_late:
            self.message_user(
                request,
                f"{too_late} message(s) were already being sent, sent or cancelled: unchanged.",
                messages.WARNING,
            )


@admin.register(DeliveryReport)
class DeliveryReportAdmin(admin.ModelAdmin):
    """Reports found in incoming mail; unmatched ones (no outbound) are bounces of mail the
    platform did not send, or whose identifiers the report lost."""

    list_display = ("created_at", "kind", "message", "outbound", "matched_by", "recipient_count")
    list_filter = ("kind", "matched_by", ("outbound", admin.EmptyFieldListFilter))
    search_fields = ("envelope_id", "original_message_id", "message__subject")
    list_select_related = ("message", "outbound")
    readonly_fields = (
        "message",
        "kind",
        "outbound",
        "matched_by",
        "recipient_lines",
        "envelope_id",
        "original_message_id",
        "reporting_mta",
        "defects",
        "created_at",
    )
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.display(description="recipients")
    def recipient_count(self, obj: DeliveryReport) -> int:
        return len(obj.recipients)

    @admin.display(description="recipients")
    def recipient_lines(self, obj: DeliveryReport) -> str:
        return _report_recipients(obj)
