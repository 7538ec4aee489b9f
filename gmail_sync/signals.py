"""Receivers that keep Gmail's push watch in step with the account (registered in apps.py):
watched when connected or resumed, stopped when paused, marked for deletion or deleted."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from messages.models import Account

from .models import GmailSettings
from .watch import gmail_watch_stop_quietly


def gmail_settings_saved(
    sender: type[GmailSettings], instance: GmailSettings, created: bool, **kwargs: Any
) -> None:
    """A Gmail account is connected when its settings row is created."""
    if created and not kwargs.get("raw"):
        from .watch_tasks import watch_account

        watch_account.delay_on_commit(instance.account_id)


def account_status_changed(sender: Any, account_ids: list[int], status: str, **kwargs: Any) -> None:
    """Sent by the store after commit (pause, resume, deletion request)."""
    follow_status(account_ids, status)


def account_saved(sender: type[Account], instance: Account, **kwargs: Any) -> None:
    """A status saved by name (`save(update_fields=[..., "status"])`: a reconnect, a pause
    through a service); other saves do not say whether the status changed."""
    update_fields = kwargs.get("update_fields") or ()
    if instance.provider == Account.Provider.GMAIL and "status" in update_fields:
        ids, status = [instance.pk], instance.status
        transaction.on_commit(lambda: follow_status(ids, status))


def follow_status(account_ids: list[int], status: str) -> None:
    """Watch the Gmail accounts among ACCOUNT_IDS that became active; stop the paused ones
    and the ones being deleted."""
    from .watch_tasks import stop_watch, watch_account

    if status == Account.Status.ACTIVE:
        task = watch_account
    elif status in (Account.Status.PAUSED, Account.Status.DELETING):
        task = stop_watch
    else:
        return
    ids = GmailSettings.objects.filter(
        account_id__in=account_ids, account__provider=Account.Provider.GMAIL
    ).values_list("account_id", flat=True)
    for account_id in ids:
        task.delay(account_id)


def account_deleting(sender: type[Account], instance: Account, **kwargs: Any) -> None:
    """An account deleted while its watch runs (its stop task lost the race, or it was
    deleted without being marked first): stop the watch once the deletion commits, with the
    credentials still in memory."""
    if instance.provider != Account.Provider.GMAIL:
        return
    watched = GmailSettings.objects.filter(
        account_id=instance.pk, watch_expiration__gt=timezone.now()
    ).exists()
    if watched:
        transaction.on_commit(lambda: gmail_watch_stop_quietly(instance))
