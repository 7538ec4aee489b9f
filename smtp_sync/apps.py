from django.apps import AppConfig


class SmtpSyncConfig(AppConfig):
    """Generic providers: IMAP sync and SMTP sending."""

    name = "smtp_sync"
    verbose_name = "IMAP / SMTP sync"

    def ready(self) -> None:
        from django.db.models.signals import post_delete

        from messages.providers import register
        from messages.signals import account_status_changed

        from .accounts import ImapProvider
        from .idle_nudge import idle_refresh_request
        from .models import ImapSettings
        from .pool import imap_settings_deleted

        register("imap", ImapProvider())
        account_status_changed.connect(
            lambda **_: idle_refresh_request(), weak=False, dispatch_uid="imap-idle-nudge"
        )
        post_delete.connect(
            imap_settings_deleted, sender=ImapSettings, dispatch_uid="imap-pool-settings-deleted"
        )
