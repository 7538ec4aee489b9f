"""Admin for operators: thin over the store; HTML from mail is sanitized before it is shown.

Who reads what: staff other than superusers see only the objects of accounts they own
(messages.admin_scope); of those, mail *metadata* (accounts, folders, threads, who wrote to
whom, when, subjects, flags, sizes) with the models' view permissions. Mail *content* (bodies, the
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
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from emailplatform import topics
from emailplatform.object_storage import open_for_download

from . import providers
from .admin_flows import add_flow_for, add_flows
from .admin_scope import OwnerScopedAdmin, owned, sees_everyone
from .admin_search import SearchNotUnderstood, message_search
from .admin_sync_settings import AccountForm
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
from .services import (
    account_delete_request,
    account_update,
    attachment_ensure_stored,
    message_change,
)
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
class AccountAdmin(OwnerScopedAdmin, admin.ModelAdmin):
    """Accounts are added through their provider's flow (add_view lists them); the page shows
    what the account is and how it syncs, and edits only its name and sync settings."""

    owner_path = "owner"
    form = AccountForm
    list_display = (
        "address",
        "provider",
        "owner",
        "status",
        "last_sync_at",
        "sync_progress",
        "short_error",
    )
    list_filter = ("provider", "status")
    search_fields = ("email_address", "display_name", "owner__username", "owner__email")
    list_select_related = ("owner",)
    readonly_fields = (
        "email_address",
        "provider",
        "owner",
        "status",
        "server",
        "contents",
        "last_sync_at",
        "sync_progress",
        "last_error",
        "last_error_at",
        "created_at",
    )
    fieldsets = (
        (
            None,
            {"fields": ("email_address", "display_name", "provider", "owner", "status", "server")},
        ),
        ("Mail", {"fields": ("contents", "last_sync_at", "sync_progress")}),
        ("Problems", {"fields": ("last_error", "last_error_at")}),
        ("Sync settings", {"fields": tuple(AccountForm.KEYS)}),
        (None, {"fields": ("created_at",)}),
    )
    actions = ("sync_now", "pause", "resume")

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context=None):
        """One form per provider: "Add" chooses which."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        flows = [
            {"title": f.title, "description": f.description, "url": reverse(f.url_name)}
            for f in add_flows()
            if f.allowed(request)
        ]
        if len(flows) == 1:
            return HttpResponseRedirect(flows[0]["url"])
        context = {
            **self.admin_site.each_context(request),
            "title": "Add an account",
            "opts": self.model._meta,
            "flows": flows,
        }
        return TemplateResponse(request, "admin/mailstore/account/add_choose.html", context)

    def get_deleted_objects(self, objs, request: HttpRequest):
        """The confirmation lists the accounts, not every message of them (a big mailbox's
        rows would take minutes to list); deletion runs in the background."""
        accounts = list(objs)
        return [str(a) for a in accounts], {"accounts": len(accounts)}, set(), []

    def delete_model(self, request: HttpRequest, obj: Account) -> None:
        account_delete_request(account=obj)

    def delete_queryset(self, request: HttpRequest, queryset) -> None:
        for account in queryset:
            account_delete_request(account=account)

    def save_model(self, request: HttpRequest, obj: Account, form, change: bool) -> None:
        settings = form.sync_settings()
        obj.sync_settings = {}  # account_update merges: start from nothing to drop removed keys
        account_update(account=obj, display_name=obj.display_name, sync_settings=settings)

    @admin.display(description="account", ordering="email_address")
    def address(self, obj: Account) -> str:
        return clipped(obj.email_address, 40)

    @admin.display(description="server")
    def server(self, obj: Account) -> str:
        try:
            described = providers.get_adapter(obj.provider).describe(obj)
        except providers.UnknownProvider:
            described = {}
        rows = format_html_join(
            "", "<tr><th>{}</th><td>{}</td></tr>", ((k, _setting(v)) for k, v in described.items())
        )
        flow = add_flow_for(obj.provider)
        link = ""
        if flow and flow.settings_url_name:
            url = reverse(flow.settings_url_name, args=[obj.pk])
            link = format_html('<a href="{}">Change server settings</a>', url)
        if not rows:
            return link or "-"
        return format_html('<table class="account-server">{}</table>{}', rows, link)

    @admin.display(description="stored mail")
    def contents(self, obj: Account) -> str:
        messages_url = reverse("admin:mailstore_message_changelist")
        folders_url = reverse("admin:mailstore_folder_changelist")
        query = f"?account__id__exact={obj.pk}"
        return format_html(
            '<a href="{}">{} messages</a> in <a href="{}">{} folders</a>',
            messages_url + query,
            obj.messages.count(),
            folders_url + query,
            obj.folders.count(),
        )

    @admin.display(description="progress")
    def sync_progress(self, obj: Account) -> str:
        return _progress(obj.sync_runs.order_by("-started_at").first())

    @admin.display(description="last error")
    def short_error(self, obj: Account) -> str:
        return clipped(obj.last_error, 60)

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


TEXT_BODY_STYLE = (
    "white-space:pre-wrap;overflow-wrap:anywhere;margin:0;padding:8px;max-height:40em;"
    "overflow:auto;border:1px solid #ccc;font-size:13px"
)


def _setting(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "-"
    return str(value) if value not in ("", None) else "-"


def clipped(text: str, limit: int) -> str:
    """TEXT cut to LIMIT characters for a list column (the whole text in its tooltip), so a
    long subject or address never widens the list past the screen."""
    if len(text) <= limit:
        return text
    return format_html('<span title="{}">{}…</span>', text, text[: limit - 1])


# The app list beside every page takes ~280 px a list needs (lists must fit 1,400 px); the
# index page lists the apps anyway.
admin.site.enable_nav_sidebar = False


@admin.display(description="account", ordering="account__email_address")
def account_column(obj) -> str:
    return clipped(obj.account.email_address, 28)


class SyncedAdmin(OwnerScopedAdmin, admin.ModelAdmin):
    """What syncing writes: shown, never added or edited here (the next sync would undo it)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


ACCOUNT_FILTER = ("account", admin.RelatedOnlyFieldListFilter)


@admin.register(Folder)
class FolderAdmin(SyncedAdmin):
    list_display = (
        "folder_name",
        account_column,
        "role",
        "message_count",
        "uidvalidity",
        "uidnext",
    )
    list_filter = ("role", ACCOUNT_FILTER)
    search_fields = ("name", "display_name", "account__email_address")
    list_select_related = ("account",)
    exclude = ("sync_state",)

    @admin.display(description="folder", ordering="display_name")
    def folder_name(self, obj: Folder) -> str:
        return clipped(obj.display_name or obj.name, 40)

    @admin.display(description="messages")
    def message_count(self, obj: Folder) -> str:
        url = (
            reverse("admin:mailstore_message_changelist")
            + f"?{FolderFilter.parameter_name}={obj.pk}"
        )
        return format_html('<a href="{}">{}</a>', url, obj.locations.count())


@admin.register(Thread)
class ThreadAdmin(SyncedAdmin):
    list_display = ("thread_subject", account_column, "message_count", "last_message_at")
    list_filter = (ACCOUNT_FILTER,)
    search_fields = ("subject", "provider_thread_id")
    list_select_related = ("account",)
    date_hierarchy = "last_message_at"

    @admin.display(description="subject", ordering="subject")
    def thread_subject(self, obj: Thread) -> str:
        return clipped(obj.subject or "(no subject)", 60)


class AttachmentInline(admin.TabularInline):
    model = Attachment
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    fields = ("filename", "content_type", "size", "is_inline", "content_id", "sha256", "file")
    readonly_fields = fields

    def get_fields(self, request: HttpRequest, obj=None):
        if can_read_mail(request):
            return self.fields
        return tuple(f for f in self.fields if f != "file")


class LocationInline(admin.TabularInline):
    """Rows read "INBOX, UID 4" (MessageLocation.__str__)."""

    model = MessageLocation
    verbose_name = "location"
    verbose_name_plural = "where it is"
    extra = 0
    can_delete = False
    fields = ("folder_link",)
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest):
        return super().get_queryset(request).select_related("folder")

    @admin.display(description="folder")
    def folder_link(self, obj: MessageLocation) -> str:
        url = reverse("admin:mailstore_folder_change", args=[obj.folder_id])
        return format_html('<a href="{}">{}</a>', url, obj.folder.display_name or obj.folder.name)


class MessageDeliveryReportInline(admin.StackedInline):
    model = DeliveryReport
    extra = 0
    can_delete = False
    fields = ("kind", "outbound", "matched_by", "recipient_lines", "defects")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

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


class FolderFilter(admin.SimpleListFilter):
    """Messages in one folder (the folder list's counts link here)."""

    title = "folder"
    parameter_name = "folder"

    def lookups(self, request: HttpRequest, model_admin):
        value = self.value()
        if not (value and value.isdigit()):
            return []
        folder = owned(Folder.objects.filter(pk=int(value)), request.user, "account__owner").first()
        return [(value, str(folder.display_name or folder.name))] if folder else []

    def queryset(self, request: HttpRequest, queryset):
        value = self.value()
        if not value:
            return queryset
        if not value.isdigit():
            return queryset.none()
        return queryset.filter(locations__folder_id=int(value))


@admin.register(Message)
class MessageAdmin(OwnerScopedAdmin, admin.ModelAdmin):
    """Synced mail, read-only but for read/flagged, which go to the server like a client's
    change (messages.services.message_change). Search uses the full-text index."""

    list_display = (
        "subject_or_none",
        "sender",
        account_column,
        "sort_date",
        "flags",
    )
    list_filter = (
        "is_read",
        "is_flagged",
        "has_attachments",
        "account__provider",
        ACCOUNT_FILTER,
        FolderFilter,
    )
    search_fields = ("subject",)  # shows the search box; get_search_results does the search
    search_help_text = (
        "Words of the subject, the sender or the text (full-text index); "
        '"quoted phrases", -excluded words, or a Message-ID.'
    )
    list_select_related = ("account",)
    list_per_page = 50
    show_full_result_count = False  # a count of every message on each search: a full scan
    date_hierarchy = "sort_date"
    inlines = (LocationInline, AttachmentInline, MessageDeliveryReportInline)
    readonly_fields = (
        "is_answered",
        "is_draft",
        "subject",
        "from_name",
        "from_address",
        "recipients",
        "date",
        "internal_date",
        "rendered_html",
        "text_body",
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
        *readonly_fields[2:],
    )
    # Shown only to users with READ_MAIL_CONTENT.
    content_fields = ("rendered_html", "text_body", "raw_source")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # the next sync would bring it back: mail is deleted on its server

    def get_queryset(self, request: HttpRequest):
        return super().get_queryset(request).defer("search_vector")

    def get_fields(self, request: HttpRequest, obj=None):
        if can_read_mail(request):
            return self.fields
        return tuple(f for f in self.fields if f not in self.content_fields)

    def get_search_results(self, request: HttpRequest, queryset, search_term: str):
        try:
            found = message_search(queryset, search_term, with_text=can_read_mail(request))
        except SearchNotUnderstood as exc:
            self.message_user(request, str(exc), messages.WARNING)
            return queryset.none(), False
        return found, False

    def save_model(self, request: HttpRequest, obj: Message, form, change: bool) -> None:
        """Flags go to the server (or the store, for local accounts) as a client's would."""
        changed = {
            f: form.cleaned_data[f] for f in ("is_read", "is_flagged") if f in form.changed_data
        }
        if not changed:
            return
        applied = message_change(message=Message.objects.get(pk=obj.pk), **changed)
        if not applied:
            self.message_user(
                request, "The change was sent to the mail server; the page shows it once synced."
            )

    @admin.display(description="subject", ordering="subject")
    def subject_or_none(self, obj: Message) -> str:
        return clipped(obj.subject or "(no subject)", 60)

    @admin.display(description="from", ordering="from_address")
    def sender(self, obj: Message) -> str:
        return clipped(obj.from_name or obj.from_address, 30)

    @admin.display(description="flags")
    def flags(self, obj: Message) -> str:
        """One short column instead of four boolean ones (the list must fit 1,400 px)."""
        words = [
            "read" if obj.is_read else "unread",
            "flagged" if obj.is_flagged else "",
            "attachments" if obj.has_attachments else "",
            "damaged" if obj.defects else "",
        ]
        return ", ".join(w for w in words if w)

    @admin.display(description="text")
    def text_body(self, obj: Message) -> str:
        """The plain-text body as written: line breaks, indentation and runs of spaces kept."""
        if not obj.body_text:
            return "-"
        return format_html('<pre style="{}">{}</pre>', TEXT_BODY_STYLE, obj.body_text)

    def _check_content_access(self, request: HttpRequest, message: Message) -> None:
        """The raw and attachment views: the message's view permission and READ_MAIL_CONTENT
        (admin_view alone checks only is_staff), and only the staff user's own mail."""
        if not (self.has_view_permission(request, message) and can_read_mail(request)):
            raise PermissionDenied
        if not self.get_queryset(request).filter(pk=message.pk).exists():
            raise Http404

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
class SyncRunAdmin(SyncedAdmin):
    list_display = (
        account_column,
        "kind",
        "status",
        "started_at",
        "finished_at",
        "progress",
        "created",
        "updated",
        "damaged",
    )
    list_filter = ("kind", "status", ACCOUNT_FILTER)
    search_fields = ("account__email_address", "error")
    list_select_related = ("account",)

    @admin.display(description="progress")
    def progress(self, obj: SyncRun) -> str:
        return _progress(obj)


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    """Scoped by account_id (no foreign key: a letter outlives its account); letters of no
    account are for superusers only."""

    list_display = ("created_at", "task_name", "account_id", "short_reason")
    search_fields = ("reason", "task_name")
    readonly_fields = ("task_name", "account_id", "reason", "payload", "payload_excerpt")
    # A payload carries raw mail (EmailNewMessage batches): content, not metadata.
    content_fields = ("payload", "payload_excerpt")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="reason")
    def short_reason(self, obj: DeadLetter) -> str:
        return clipped(obj.reason, 80)

    def get_queryset(self, request: HttpRequest):
        letters = super().get_queryset(request)
        if sees_everyone(request.user):
            return letters
        mine = Account.objects.filter(owner=request.user.pk).values("pk")
        return letters.filter(account_id__in=mine)

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
class OutboundMessageAdmin(OwnerScopedAdmin, admin.ModelAdmin):
    """Outbound mail: who sent what to whom, its state and why it failed. Composing goes through
    the API (messages.outbox checks everything there); here an operator watches and cancels.
    Bodies are mail content (READ_MAIL_CONTENT); the MIME bytes are never shown."""

    list_display = (
        "subject_or_none",
        "sender",
        account_column,
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

    @admin.display(description="subject", ordering="subject")
    def subject_or_none(self, obj: OutboundMessage) -> str:
        return clipped(obj.subject or "(no subject)", 50)

    @admin.display(description="from", ordering="from_address")
    def sender(self, obj: OutboundMessage) -> str:
        return clipped(obj.from_address, 28)

    @admin.display(description="last error")
    def short_error(self, obj: OutboundMessage) -> str:
        return clipped(obj.last_error, 60)

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
class DeliveryReportAdmin(OwnerScopedAdmin, admin.ModelAdmin):
    """Reports found in incoming mail; unmatched ones (no outbound) are bounces of mail the
    platform did not send, or whose identifiers the report lost."""

    owner_path = "message__account__owner"
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
