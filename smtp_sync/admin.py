"""Admin for IMAP/SMTP accounts: the password is write-only and the connection is tested first."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model

from messages.models import Account

from .accounts import ImapAccountInput, imap_account_create, imap_connection_test
from .imap import ImapError
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


class NewImapAccountForm(forms.ModelForm):
    owner = forms.ModelChoiceField(queryset=get_user_model().objects.all())
    email_address = forms.EmailField()
    password = forms.CharField(widget=forms.PasswordInput(render_value=False), strip=False)

    class Meta:
        model = ImapSettings
        fields = SERVER_FIELDS

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
        )
        try:
            imap_connection_test(self.account_input.server())
        except ImapError as exc:
            raise forms.ValidationError(f"Connection test failed: {exc}") from exc
        return cleaned


class ChangeImapSettingsForm(forms.ModelForm):
    new_password = forms.CharField(
        widget=forms.PasswordInput(render_value=False),
        required=False,
        strip=False,
        help_text="Leave empty to keep the stored password (never shown).",
    )

    class Meta:
        model = ImapSettings
        fields = (*SERVER_FIELDS, "smtp_username")


@admin.register(ImapSettings)
class ImapSettingsAdmin(admin.ModelAdmin):
    list_display = ("account", "imap_host", "imap_port", "imap_security", "username", "idle")
    search_fields = ("account__email_address", "imap_host", "username")
    list_select_related = ("account",)
    actions = ("test_connection",)

    @admin.display(boolean=True, description="IDLE")
    def idle(self, obj: ImapSettings) -> bool:
        return obj.supports_idle

    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs["form"] = ChangeImapSettingsForm if obj else NewImapAccountForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("owner", "email_address", "password", *NewImapAccountForm.Meta.fields)
        return (*ChangeImapSettingsForm.Meta.fields, "new_password")

    def save_model(self, request, obj, form, change):
        if not change:
            account = imap_account_create(
                owner=form.cleaned_data["owner"], data=form.account_input, test_connection=False
            )
            form.instance = obj = ImapSettings.objects.get(account=account)
            return
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

    @admin.action(description="Test the connection")
    def test_connection(self, request, queryset) -> None:
        for settings in queryset.select_related("account"):
            try:
                imap_connection_test(server_for(settings.account))
            except ImapError as exc:
                self.message_user(request, f"{settings.account}: {exc}", level="error")
            else:
                self.message_user(request, f"{settings.account}: connection OK")
