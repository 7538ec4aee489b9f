from django.apps import AppConfig


class MailStoreConfig(AppConfig):
    """The message service. Labelled `mailstore`: `messages` belongs to django.contrib.messages."""

    name = "messages"
    label = "mailstore"
    verbose_name = "Mail store"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from .models import Account
        from .outbox_dispatch import wake_on_save, wake_on_status
        from .signals import account_status_changed

        account_status_changed.connect(wake_on_status, dispatch_uid="outbox_wake_on_status")
        post_save.connect(wake_on_save, sender=Account, dispatch_uid="outbox_wake_on_save")
