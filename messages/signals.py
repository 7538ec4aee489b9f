"""Signals the store sends so that provider apps can act without the store knowing them."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction
from django.dispatch import Signal

# Accounts paused, resumed or marked for deletion (changes made by queryset updates, which
# post_save never sees); sent after commit with `account_ids` (list[int]) and `status`.
account_status_changed = Signal()


def account_status_changed_send(account_ids: Iterable[int], status: str) -> None:
    ids = list(account_ids)
    if not ids:
        return
    from .models import Account

    transaction.on_commit(
        lambda: account_status_changed.send(sender=Account, account_ids=ids, status=status)
    )
