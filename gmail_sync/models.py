"""What the Gmail API provider keeps per account. The refresh token stays encrypted on the
Account (`credentials_encrypted`: {"refresh_token": ...})."""

from django.db import models

from messages.models import Account


class WatchScope(models.TextChoices):
    INBOX = "inbox", "INBOX only"
    ALL = "all", "Every label"


class GmailSettings(models.Model):
    account = models.OneToOneField(
        Account, on_delete=models.CASCADE, primary_key=True, related_name="gmail_settings"
    )
    history_id = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="The mailbox's history id the store is complete up to (the incremental "
        "sync's cursor); moves only after what it covers is committed.",
    )
    sync_state = models.JSONField(
        default=dict, blank=True, editable=False, help_text="Checkpoint of a full sync."
    )
    include_spam_trash = models.BooleanField(
        default=False, help_text="Sync SPAM and TRASH too (messages.list includeSpamTrash)."
    )
    watch_scope = models.CharField(
        max_length=8,
        choices=WatchScope.choices,
        default=WatchScope.INBOX,
        help_text="Which changes Gmail pushes (users.watch labelIds).",
    )
    watch_expiration = models.DateTimeField(null=True, blank=True, editable=False)
    scopes = models.JSONField(default=list, blank=True, editable=False)

    class Meta:
        verbose_name = "Gmail settings"
        verbose_name_plural = "Gmail settings"

    def __str__(self) -> str:
        return f"Gmail settings of account {self.account_id}"
