from django.apps import AppConfig


class SmtpSyncConfig(AppConfig):
    """Generic providers: IMAP sync and SMTP sending."""

    name = "smtp_sync"
    verbose_name = "IMAP / SMTP sync"

    def ready(self) -> None:
        from messages.providers import register

        from .accounts import ImapProvider

        register("imap", ImapProvider())
