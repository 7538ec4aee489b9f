"""Admin for Gmail accounts: their settings (never the token), and "Connect a Gmail account",
which starts the OAuth flow for an owner the staff user picks; Google sends the browser back to
the callback, which returns to the account's admin page. Only the staff user who started may
finish (the callback checks the session's user)."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from messages.admin_flows import AddFlow, add_flow_register
from messages.admin_scope import OwnerScopedAdmin, owner_choices
from messages.models import Account

from .accounts import GmailConnectError, gmail_profile, redirect_uri_for
from .client import SCOPES
from .models import GmailSettings
from .oauth import AuthorizationError, authorization_start


class ConnectForm(forms.Form):
    owner = forms.ModelChoiceField(
        queryset=get_user_model().objects.none(),
        help_text="Whose account it becomes. You will sign in to Google in this browser.",
    )

    def __init__(self, *args, user, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["owner"].queryset = owner_choices(user)


@admin.register(GmailSettings)
class GmailSettingsAdmin(OwnerScopedAdmin, admin.ModelAdmin):
    list_display = (
        "account",
        "history_id",
        "include_spam_trash",
        "watch_scope",
        "watch_expiration",
    )
    list_filter = ("watch_scope", "include_spam_trash")
    search_fields = ("account__email_address",)
    list_select_related = ("account",)
    fields = (
        "account",
        "include_spam_trash",
        "watch_scope",
        "history_id",
        "scopes",
        "watch_expiration",
    )
    readonly_fields = ("account", "history_id", "scopes", "watch_expiration")
    actions = ("test_connection",)
    change_list_template = "admin/gmail_sync/gmailsettings/change_list.html"

    def get_urls(self):
        connect = path(
            "connect/",
            self.admin_site.admin_view(self.connect_view),
            name="gmail_sync_gmailsettings_connect",
        )
        return [connect, *super().get_urls()]

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context=None):
        return HttpResponseRedirect(reverse("admin:gmail_sync_gmailsettings_connect"))

    def connect_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ConnectForm(
            request.POST or None, initial={"owner": request.user.pk}, user=request.user
        )
        if request.method == "POST" and form.is_valid():
            try:
                url = authorization_start(
                    user=request.user,
                    owner=form.cleaned_data["owner"],
                    redirect_uri=redirect_uri_for(request),
                    origin="admin",
                )
            except AuthorizationError as exc:
                form.add_error(None, exc.message)
            else:
                return HttpResponseRedirect(url)  # Google's consent screen (a setting)
        context = {
            **self.admin_site.each_context(request),
            "title": "Connect a Gmail account",
            "form": form,
            "opts": self.model._meta,
            "scopes": SCOPES,
        }
        return TemplateResponse(request, "admin/gmail_sync/connect.html", context)

    @admin.action(description="Test the connection")
    def test_connection(self, request: HttpRequest, queryset) -> None:
        for gmail in queryset.select_related("account"):
            account = gmail.account
            token = account.get_credentials().get("refresh_token", "")
            try:
                gmail_profile(token, account.email_address)
            except GmailConnectError as exc:
                self.message_user(request, f"{account}: {exc.message}", level="error")
            else:
                self.message_user(request, f"{account}: connection OK")


add_flow_register(
    AddFlow(
        provider=Account.Provider.GMAIL,
        title="Gmail account",
        description=(
            "Through Google's consent screen: you sign in to Google in this browser; no "
            "password is stored."
        ),
        url_name="admin:gmail_sync_gmailsettings_connect",
        allowed=lambda request: admin.site._registry[GmailSettings].has_add_permission(request),
        settings_url_name="admin:gmail_sync_gmailsettings_change",
    )
)
