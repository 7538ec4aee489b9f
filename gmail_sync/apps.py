from django.apps import AppConfig


class GmailSyncConfig(AppConfig):
    """The Gmail API provider."""

    name = "gmail_sync"
    verbose_name = "Gmail sync"
