from django.apps import AppConfig


class MailStoreConfig(AppConfig):
    """The message service. Labelled `mailstore`: `messages` belongs to django.contrib.messages."""

    name = "messages"
    label = "mailstore"
    verbose_name = "Mail store"
    default_auto_field = "django.db.models.BigAutoField"
