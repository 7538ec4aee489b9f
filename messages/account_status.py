"""An account's sync status as every provider app shows it: errors, the auth_error parking
and its re-test schedule, back to active."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from emailplatform.observability import metrics

from .events import events_record
from .models import Account
from .outbox_dispatch import outbox_wake


def account_mark_error(account: Account, message: str, *, auth: bool = False) -> None:
    """Show a failure on the account. With AUTH, park it (status auth_error) and schedule a
    re-test of its login with backoff (`auth_retest_delay`), so that a server that accepts the
    password again brings it back without a human (smtp_sync.watchdog runs the re-tests)."""
    now = timezone.now()
    fields: dict = {"last_error": message, "last_error_at": now}
    with transaction.atomic():
        if auth:
            stored = Account.objects.filter(pk=account.pk).values_list("auth_failures", flat=True)
            failures = (stored.first() or 0) + 1
            fields.update(
                status=Account.Status.AUTH_ERROR,
                auth_failures=failures,
                auth_retest_at=now + auth_retest_delay(failures),
            )
        Account.objects.filter(pk=account.pk).update(**fields)
        events_record(account, "account", "updated", [account.pk])
        transaction.on_commit(lambda: metrics.error("auth" if auth else "account"))


def auth_retest_delay(failures: int) -> timedelta:
    """AUTH_RETEST_SECONDS (1 minute) after the first refusal, doubling up to
    AUTH_RETEST_MAX_SECONDS (24 h): a server fixed soon brings the account back soon, and a
    password that stays wrong costs about ten logins the first day, then one a day."""
    delay = settings.AUTH_RETEST_SECONDS * 2 ** max(0, failures - 1)
    return timedelta(seconds=min(settings.AUTH_RETEST_MAX_SECONDS, delay))


def account_reactivate(account: Account) -> bool:
    """A parked (auth_error) account whose login works again: active, error cleared."""
    with transaction.atomic():
        changed = Account.objects.filter(pk=account.pk, status=Account.Status.AUTH_ERROR).update(
            status=Account.Status.ACTIVE,
            last_error="",
            auth_failures=0,
            auth_retest_at=None,
        )
        if changed:
            events_record(account, "account", "updated", [account.pk])
            outbox_wake([account.pk])
    return bool(changed)


def account_mark_ok(account: Account) -> None:
    with transaction.atomic():
        back = Account.objects.filter(
            pk=account.pk, status__in=[Account.Status.ERROR, Account.Status.AUTH_ERROR]
        ).update(status=Account.Status.ACTIVE)
        Account.objects.filter(pk=account.pk).update(
            last_error="", last_sync_at=timezone.now(), auth_failures=0, auth_retest_at=None
        )
        events_record(account, "account", "updated", [account.pk])
        if back:
            outbox_wake([account.pk])
