"""Admin: endpoints per user (add, change, enable), each with its delivery log and
redelivery. Writes go through webhooks.services, so the admin and the API refuse the same URLs
and event types."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from messages.admin import can_read_mail

from . import services
from .events import EVENT_TYPES
from .models import WebhookDelivery, WebhookEndpoint


class EndpointForm(forms.ModelForm):
    url = forms.URLField(max_length=2048, assume_scheme="https", help_text="https:// URL.")
    event_types = forms.MultipleChoiceField(
        choices=[(t, t) for t in EVENT_TYPES],
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="None ticked: every event type.",
    )

    class Meta:
        model = WebhookEndpoint
        fields = ["owner", "url", "description", "event_types", "is_active"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.request_user = kwargs.pop("request_user", None)
        super().__init__(*args, **kwargs)

    def clean_url(self) -> str:
        url = self.cleaned_data["url"]
        owner = self.cleaned_data.get("owner") or getattr(self.instance, "owner", None)
        allow = services.may_reach_internal(self.request_user or owner)
        return services.url_check(url, allow_internal=allow)


class DeliveryInline(admin.TabularInline):
    model = WebhookDelivery
    fields = ("log_link", "event_type", "status", "attempts", "response_status", "latency_ms")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    ordering = ("-id",)
    verbose_name_plural = "latest deliveries (the full log: 'Deliveries' above)"

    def get_queryset(self, request: HttpRequest) -> QuerySet[WebhookDelivery]:
        latest = super().get_queryset(request).order_by("-id").values_list("id", flat=True)[:20]
        return WebhookDelivery.objects.filter(pk__in=list(latest)).order_by("-id")

    @admin.display(description="delivery")
    def log_link(self, obj: WebhookDelivery) -> str:
        url = reverse("admin:webhooks_webhookdelivery_change", args=[obj.pk])
        return format_html('<a href="{}">#{} (event {})</a>', url, obj.pk, obj.event_id)


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = EndpointForm
    list_display = ("url", "owner", "is_active", "state", "waiting", "last_success_at", "log")
    list_filter = ("is_active",)
    search_fields = ("url", "owner__username", "description")
    raw_id_fields = ("owner",)
    readonly_fields = (
        "disabled_reason",
        "disabled_at",
        "failing_since",
        "retry_at",
        "last_success_at",
        "cursor",
        "created_at",
        "updated_at",
        "log",
    )
    inlines = [DeliveryInline]
    actions = ["enable", "disable", "rotate_secret"]

    def get_form(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, **kwargs)

        class WithUser(form):  # type: ignore[misc,valid-type]
            def __init__(self, *args: Any, **kw: Any) -> None:
                super().__init__(*args, request_user=request.user, **kw)

        return WithUser

    def get_queryset(self, request: HttpRequest) -> QuerySet[WebhookEndpoint]:
        return (
            super()
            .get_queryset(request)
            .select_related("owner")
            .annotate(waiting_count=Count("deliveries", filter=~Q(deliveries__status="delivered")))
        )

    @admin.display(description="waiting", ordering="waiting_count")
    def waiting(self, obj: WebhookEndpoint) -> int:
        return getattr(obj, "waiting_count", 0)

    @admin.display(description="state")
    def state(self, obj: WebhookEndpoint) -> str:
        if not obj.is_active:
            return obj.disabled_reason or "disabled"
        if obj.failing_since:
            return f"failing since {obj.failing_since:%Y-%m-%d %H:%M} UTC"
        return "ok"

    @admin.display(description="delivery log")
    def log(self, obj: WebhookEndpoint) -> str:
        if obj.pk is None:
            return "-"
        url = reverse("admin:webhooks_webhookdelivery_changelist")
        return format_html('<a href="{}?endpoint__id__exact={}">deliveries</a>', url, obj.pk)

    def save_model(
        self, request: HttpRequest, obj: WebhookEndpoint, form: Any, change: bool
    ) -> None:
        data = form.cleaned_data
        try:
            if not change:
                created, secret = services.endpoint_create(
                    owner=data["owner"],
                    url=data["url"],
                    event_types=data["event_types"],
                    description=data.get("description", ""),
                    created_by=request.user,
                )
                obj.pk = created.pk
                messages.warning(
                    request,
                    f"Signing secret of this endpoint (shown once; give it to its owner): {secret}",
                )
                return
            fields = {name: data[name] for name in form.changed_data if name in data}
            current = WebhookEndpoint.objects.get(pk=obj.pk)
            services.endpoint_update(endpoint=current, data=fields, user=request.user)
        except ValidationError as exc:
            messages.error(request, "; ".join(exc.messages))

    @admin.action(description="Enable (deliver what waits, with a new day of retries)")
    def enable(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        for endpoint in queryset:
            services.endpoint_update(endpoint=endpoint, data={"is_active": True})

    @admin.action(description="Disable")
    def disable(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        for endpoint in queryset:
            services.endpoint_update(endpoint=endpoint, data={"is_active": False})

    @admin.action(description="New signing secret")
    def rotate_secret(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        for endpoint in queryset:
            secret = services.endpoint_rotate_secret(endpoint=endpoint)
            messages.warning(request, f"New signing secret of {endpoint.url}: {secret}")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "endpoint",
        "event_type",
        "event_id",
        "status",
        "attempts",
        "response_status",
        "latency_ms",
        "error",
        "created_at",
        "delivered_at",
    )
    list_filter = ("status", "event_type")
    list_select_related = ("endpoint",)
    search_fields = ("=event_id", "endpoint__url")
    raw_id_fields = ("endpoint",)
    actions = ["redeliver"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in WebhookDelivery._meta.fields]

    def get_exclude(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # The payload of message events carries a snippet of the mail: content, not metadata.
        return [] if can_read_mail(request) else ["payload"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        hidden = set(self.get_exclude(request, obj))
        return [f.name for f in WebhookDelivery._meta.fields if f.name not in hidden]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Redeliver (same body, new signature)")
    def redeliver(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        count = services.deliveries_redeliver(deliveries=queryset)
        messages.success(request, f"{count} deliveries queued again.")
