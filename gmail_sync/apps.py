from django.apps import AppConfig


class GmailSyncConfig(AppConfig):
    """The Gmail API provider."""

    name = "gmail_sync"
    verbose_name = "Gmail sync"

    def ready(self) -> None:
        from django.db.models.signals import post_save, pre_delete

        from messages.models import Account
        from messages.providers import register
        from messages.signals import account_status_changed

        from . import signals
        from .accounts import GmailProvider
        from .models import GmailSettings
        from .oauth import quiet_token_logs

        register("gmail", GmailProvider())
        quiet_token_logs()
        # The push watch follows the account (gmail_sync.watch).
        post_save.connect(
            signals.gmail_settings_saved, sender=GmailSettings, dispatch_uid="gmail-watch-connect"
        )
        account_status_changed.connect(
            signals.account_status_changed, dispatch_uid="gmail-watch-status"
        )
        post_save.connect(signals.account_saved, sender=Account, dispatch_uid="gmail-watch-save")
        pre_delete.connect(
            signals.account_deleting, sender=Account, dispatch_uid="gmail-watch-delete"
        )
