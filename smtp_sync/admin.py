"""Admin for IMAP/SMTP accounts: the password is write-only and the connection is tested first.

Hosts go through the outbound guard (emailplatform.netguard) with the rule of the staff user who
types them (accounts.may_reach_internal); the account keeps that rule for its syncs.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.http import HttpResponseRedirect
from django.urls import reverse

from emailplatform import netguard
from messages.admin_flows import AddFlow, add_flow_register
from messages.admin_scope import OwnerScopedAdmin, owner_choices
from messages.models import Account

from .accounts import (
    ImapAccountInput,
    ServerSettingRefused,
    imap_account_create,
    imap_connection_test,
    may_reach_internal,
    server_settings_check,
    smtp_settings_check,
)
from .imap import ImapError, ImapRefusedError
from .models import ImapSettings, Security
from .sync import server_for

SERVER_FIELDS = (
    "imap_host",
    "imap_port",
    "imap_security",
    "username",
    "smtp_host",
    "smtp_port",
    "smtp_security",
)
ADDRESS_FIELDS = frozenset(SERVER_FIELDS) - {"username"}  # a change is checked by the guard


class HostsForm(forms.ModelForm):
    """Host fields normalized and checked for syntax; `allow_internal` is the rule of the
    staff user filling the form (set by the admin on each request's form class)."""

    allow_internal = False

    def _host(self, name: str) -> str:
        value = self.cleaned_data.get(name) or ""
        if not value and not self.fields[name].required:
            return value
        try:
            return netguard.normalize_host(value)
        except netguard.HostInvalid as exc:
            raise forms.ValidationError(str(exc)) from exc

    def clean_imap_host(self) -> str:
        return self._host("imap_host")

    def clean_smtp_host(self) -> str:
        return self._host("smtp_host")


class NewImapAccountForm(HostsForm):
    owner = forms.ModelChoiceField(queryset=get_user_model().objects.none())
    email_address = forms.EmailField()
    display_name = forms.CharField(max_length=255, required=False)
    password = forms.CharField(widget=forms.PasswordInput(render_value=False), strip=False)

    request_user = None  # set by the admin on each request's form class, like allow_internal

    class Meta:
        model = ImapSettings
        fields = (*SERVER_FIELDS, "smtp_username", "smtp_trust_self_signed")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.request_user is not None:
            self.fields["owner"].queryset = owner_choices(self.request_user)
            self.fields["owner"].initial = self.request_user.pk
        self.fields["username"].help_text = "The IMAP login name."

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        self.account_input = ImapAccountInput(
            email_address=cleaned["email_address"],
            imap_host=cleaned["imap_host"],
            imap_port=cleaned["imap_port"],
            imap_security=cleaned["imap_security"],
            username=cleaned["username"],
            password=cleaned["password"],
            smtp_host=cleaned.get("smtp_host", ""),
            smtp_port=cleaned.get("smtp_port") or 465,
            smtp_security=cleaned.get("smtp_security") or Security.SSL,
            smtp_username=cleaned.get("smtp_username") or "",
            smtp_trust_self_signed=bool(cleaned.get("smtp_trust_self_signed")),
            display_name=cleaned.get("display_name") or "",
            allow_internal=self.allow_internal,
        )
        data = self.account_input
        try:
            smtp_settings_check(data)
            self.capabilities = imap_connection_test(data.server())
        except ServerSettingRefused as exc:
            self.add_error(exc.field, str(exc))
        except ImapRefusedError as exc:
            self.add_error("imap_security" if exc.kind == "plaintext" else "imap_host", str(exc))
        except ImapError as exc:
            raise forms.ValidationError(f"Connection test failed: {exc}") from exc
        return cleaned


class ChangeImapSettingsForm(HostsForm):
    new_password = forms.CharField(
        widget=forms.PasswordInput(render_value=False),
        required=False,
        strip=False,
        help_text="Leave empty to keep the stored password (never shown).",
    )

    class Meta:
        model = ImapSettings
        fields = (*SERVER_FIELDS, "smtp_username", "smtp_trust_self_signed")

    def clean(self):
        """Changed server settings are checked against the guard (resolved, not connected)
        with the rule of the staff user making the change, which the account then keeps."""
        cleaned = super().clean()
        if self.errors or not ADDRESS_FIELDS & set(self.changed_data):
            return cleaned
        for prefix, default_port in (("imap", 993), ("smtp", 465)):
            try:
                server_settings_check(
                    prefix,
                    cleaned.get(f"{prefix}_host") or "",
                    cleaned.get(f"{prefix}_port") or default_port,
                    cleaned.get(f"{prefix}_security") or Security.SSL,
                    allow_internal=self.allow_internal,
                )
            except ServerSettingRefused as exc:
                self.add_error(exc.field, str(exc))
        return cleaned


NEW_ACCOUNT_FIELDSETS = (
    ("Account", {"fields": ("owner", "email_address", "display_name")}),
    (
        "Incoming mail (IMAP)",
        {"fields": ("imap_host", "imap_port", "imap_security", "username", "password")},
    ),
    (
        "Outgoing mail (SMTP)",
        {
            "fields": (
                "smtp_host",
                "smtp_port",
                "smtp_security",
                "smtp_username",
                "smtp_trust_self_signed",
            ),
            "description": "Leave the host empty for an account that only receives.",
        },
    ),
)


@admin.register(ImapSettings)
class ImapSettingsAdmin(OwnerScopedAdmin, admin.ModelAdmin):
    list_display = ("account", "imap_host", "imap_port", "imap_security", "username", "idle")
    search_fields = ("account__email_address", "imap_host", "username")
    list_select_related = ("account",)
    actions = ("test_connection",)

    @admin.display(boolean=True, description="IDLE")
    def idle(self, obj: ImapSettings) -> bool:
        return obj.supports_idle

    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs["form"] = ChangeImapSettingsForm if obj else NewImapAccountForm
        form = super().get_form(request, obj, change=change, **kwargs)
        form.allow_internal = may_reach_internal(request.user)  # a class made for this request
        form.request_user = request.user
        return form

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return NEW_ACCOUNT_FIELDSETS
        return super().get_fieldsets(request, obj)

    def get_fields(self, request, obj=None):
        if obj is None:
            return [f for _, options in NEW_ACCOUNT_FIELDSETS for f in options["fields"]]
        return (*ChangeImapSettingsForm.Meta.fields, "new_password", "allow_internal")

    def get_readonly_fields(self, request, obj=None):
        return ("allow_internal",) if obj else ()

    def save_model(self, request, obj, form, change):
        if not change:
            account = imap_account_create(
                owner=form.cleaned_data["owner"],
                data=form.account_input,
                test_connection=False,
                capabilities=form.capabilities,
            )
            obj.account = account  # response_add reads it
            return
        if ADDRESS_FIELDS & set(form.changed_data):
            obj.allow_internal = form.allow_internal
        super().save_model(request, obj, form, change)
        password = form.cleaned_data.get("new_password")
        if password:
            account = obj.account
            account.set_credentials({**account.get_credentials(), "password": password})
            account.status = Account.Status.ACTIVE
            account.last_error = ""
            account.save(update_fields=["credentials_encrypted", "status", "last_error"])

    def save_related(self, request, form, formsets, change):
        if change:
            super().save_related(request, form, formsets, change)

    def response_add(self, request, obj, post_url_continue=None):
        """To the account's page, where its first sync shows."""
        account = obj.account
        self.message_user(
            request,
            f"Account {account.email_address} added; its first sync has started.",
            messages.SUCCESS,
        )
        return HttpResponseRedirect(reverse("admin:mailstore_account_change", args=[account.pk]))

    @admin.action(description="Test the connection")
    def test_connection(self, request, queryset) -> None:
        for settings in queryset.select_related("account"):
            try:
                imap_connection_test(server_for(settings.account))
            except ImapError as exc:
                self.message_user(request, f"{settings.account}: {exc}", level="error")
            else:
                self.message_user(request, f"{settings.account}: connection OK")


add_flow_register(
    AddFlow(
        provider=Account.Provider.IMAP,
        title="IMAP / SMTP mailbox",
        description=(
            "Any mail server: host, security, login and password; the connection is tested "
            "before the account is created."
        ),
        url_name="admin:smtp_sync_imapsettings_add",
        allowed=lambda request: admin.site._registry[ImapSettings].has_add_permission(request),
        settings_url_name="admin:smtp_sync_imapsettings_change",
    )
)
