from django.apps import AppConfig


class GmailSyncConfig(AppConfig):
    """The Gmail API provider."""

    name = "gmail_sync"
    verbose_name = "Gmail sync"

    def ready(self) -> None:
        from messages.providers import register

        from .accounts import GmailProvider
        from .oauth import quiet_token_logs

        register("gmail", GmailProvider())
        quiet_token_logs()
