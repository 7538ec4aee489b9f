"""The GmailClient of a stored account (the adapter itself knows nothing of Django models)."""

from __future__ import annotations

from messages.models import Account

from .client import GmailAuthError, GmailClient


def gmail_client_for(account: Account) -> GmailClient:
    """A client authorized by the account's refresh token; GmailAuthError when it has none."""
    refresh_token = account.get_credentials().get("refresh_token")
    if not refresh_token:
        raise GmailAuthError("The account has no Gmail authorization: connect it again")
    return GmailClient(refresh_token, account.email_address)
