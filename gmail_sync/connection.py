"""The GmailClient of a stored account (the adapter itself knows nothing of Django models), and
what an account's refused authorization does."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from messages.events import events_record
from messages.models import Account

from .client import GmailAuthError, GmailClient


def gmail_client_for(account: Account) -> GmailClient:
    """A client authorized by the account's refresh token; GmailAuthError when it has none."""
    refresh_token = account.get_credentials().get("refresh_token")
    if not refresh_token:
        raise GmailAuthError("The account has no Gmail authorization: connect it again")
    return GmailClient(refresh_token, account.email_address)


def account_mark_auth_error(account: Account, reason: str) -> None:
    """Google refused the account's authorization: park it (auth_error) with the reason; the
    user connects it again."""
    with transaction.atomic():
        Account.objects.filter(pk=account.pk).update(
            status=Account.Status.AUTH_ERROR, last_error=reason[:2000], last_error_at=timezone.now()
        )
        events_record(account, "account", "updated", [account.pk])


def account_note_error(account: Account, reason: str) -> None:
    """Show a failure on the account (it stays active)."""
    with transaction.atomic():
        Account.objects.filter(pk=account.pk).update(
            last_error=reason[:2000], last_error_at=timezone.now()
        )
        events_record(account, "account", "updated", [account.pk])
