"""An account's sync settings as form fields in the admin (the API's SyncSettings keys), not a
raw JSON box. Keys the form does not know are kept as they are."""

from __future__ import annotations

from typing import Any

from django import forms

from .models import Account

DEFAULT = ""
YES_NO_DEFAULT = [(DEFAULT, "Default"), ("yes", "Yes"), ("no", "No")]


def _stored(account: Account) -> dict[str, Any]:
    return account.sync_settings if isinstance(account.sync_settings, dict) else {}


class AccountForm(forms.ModelForm):
    include_attachments = forms.BooleanField(
        required=False,
        initial=True,
        label="Store attachment files while syncing",
        help_text="Off: attachments are fetched from the server when first opened.",
    )
    skip_folders = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 40}),
        label="Folders not to sync",
        help_text="One folder name a line.",
    )
    window_days = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=36500,
        label="Sync only the last N days",
        help_text="Empty: all mail.",
    )
    backfill = forms.BooleanField(required=False, label="After the window, go on with older mail")
    send_per_minute = forms.IntegerField(
        required=False,
        min_value=0,
        max_value=100000,
        label="Sent messages per minute at most",
        help_text="Empty: the platform's default; 0: no limit.",
    )
    send_per_day = forms.IntegerField(
        required=False,
        min_value=0,
        max_value=10000000,
        label="Sent messages per day at most",
        help_text="Empty: the platform's default; 0: no limit.",
    )
    save_sent_copy = forms.TypedChoiceField(
        required=False,
        choices=YES_NO_DEFAULT,
        label="Put a copy of sent mail in Sent (IMAP)",
        help_text="Default: yes, except for servers that file sent mail themselves (Gmail).",
    )

    # form field -> sync_settings key
    KEYS = {
        "include_attachments": "includeAttachments",
        "skip_folders": "skipFolders",
        "window_days": "windowDays",
        "backfill": "backfill",
        "send_per_minute": "sendPerMinute",
        "send_per_day": "sendPerDay",
        "save_sent_copy": "saveSentCopy",
    }

    class Meta:
        model = Account
        fields = ("display_name",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        stored = (
            self.instance.sync_settings if isinstance(self.instance.sync_settings, dict) else {}
        )
        for name, key in self.KEYS.items():
            if key not in stored:
                continue
            value = stored[key]
            if name == "skip_folders":
                value = "\n".join(str(v) for v in value) if isinstance(value, list) else ""
            elif name == "save_sent_copy":
                value = "yes" if value else "no"
            self.initial[name] = value

    def clean(self) -> dict[str, Any]:
        if self.instance.status == Account.Status.DELETING:
            raise forms.ValidationError("The account is being deleted.")
        return super().clean()

    def sync_settings(self) -> dict[str, Any]:
        """The account's whole sync_settings after this form: its keys from the fields (an
        empty field removes its key), the keys it does not know unchanged."""
        data = self.cleaned_data
        stored = (
            self.instance.sync_settings if isinstance(self.instance.sync_settings, dict) else {}
        )
        result = {k: v for k, v in stored.items() if k not in self.KEYS.values()}
        result["includeAttachments"] = bool(data.get("include_attachments"))
        folders = [line.strip() for line in (data.get("skip_folders") or "").splitlines()]
        if any(folders):
            result["skipFolders"] = [f for f in folders if f]
        for name in ("window_days", "send_per_minute", "send_per_day"):
            if data.get(name) is not None:
                result[self.KEYS[name]] = data[name]
        if data.get("backfill"):
            result["backfill"] = True
        if data.get("save_sent_copy"):
            result["saveSentCopy"] = data["save_sent_copy"] == "yes"
        return result
