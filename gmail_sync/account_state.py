"""What a Gmail account shows its owner when the provider refuses it."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from messages.events import events_record
from messages.models import Account


def account_show_error(account: Account, message: str, *, auth: bool = False) -> None:
    """Record MESSAGE as the account's last error; with AUTH, the grant is gone (revoked,
    expired): the account waits in auth_error until its owner connects it again."""
    fields: dict = {"last_error": message, "last_error_at": timezone.now()}
    if auth:
        fields["status"] = Account.Status.AUTH_ERROR
    with transaction.atomic():
        changed = (
            Account.objects.filter(pk=account.pk)
            .exclude(status=Account.Status.DELETING)
            .update(**fields)
        )
        if changed:
            for name, value in fields.items():
                setattr(account, name, value)
            events_record(account, "account", "updated", [account.pk])
