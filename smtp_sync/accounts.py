"""Creating IMAP accounts: test the connection first, store secrets encrypted, start a sync."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from emailplatform import topics
from messages.events import events_record
from messages.models import Account

from .imap import ImapConnection, ImapServer
from .models import ImapSettings


@dataclass
class ImapAccountInput:
    email_address: str
    imap_host: str
    imap_port: int = 993
    imap_security: str = "ssl"
    username: str = ""
    password: str = ""
    oauth2_token: str = ""
    smtp_host: str = ""
    smtp_port: int = 465
    smtp_security: str = "ssl"
    display_name: str = ""

    def server(self) -> ImapServer:
        return ImapServer(
            host=self.imap_host,
            port=self.imap_port,
            security=self.imap_security,
            username=self.username or self.email_address,
            password=self.password,
            oauth2_token=self.oauth2_token,
            timeout=20,
        )


def imap_connection_test(
    server: ImapServer, connection_factory: Callable[[ImapServer], ImapConnection] = ImapConnection
) -> list[str]:
    """Log in and out; return the capabilities. Raises ImapError with a readable reason."""
    with connection_factory(server) as conn:
        conn.list_folders()
        return sorted(conn.capabilities)


def imap_account_create(
    *,
    owner: AbstractBaseUser,
    data: ImapAccountInput,
    test_connection: bool = True,
    start_sync: bool = True,
) -> Account:
    capabilities = imap_connection_test(data.server()) if test_connection else []
    with transaction.atomic():
        account = Account(
            owner=owner,
            provider=Account.Provider.IMAP,
            email_address=data.email_address,
            display_name=data.display_name,
        )
        account.set_credentials(
            {"password": data.password} if data.password else {"oauth2_token": data.oauth2_token}
        )
        account.save()
        ImapSettings.objects.create(
            account=account,
            imap_host=data.imap_host,
            imap_port=data.imap_port,
            imap_security=data.imap_security,
            username=data.username or data.email_address,
            smtp_host=data.smtp_host,
            smtp_port=data.smtp_port,
            smtp_security=data.smtp_security,
            capabilities=capabilities,
        )
        events_record(account, "account", "created", [account.pk])
        if start_sync:
            topics.publish_full_sync(account.pk, account.provider, {"includeAttachments": True})
    return account
