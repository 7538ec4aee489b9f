"""Creating IMAP accounts: test the connection first, store secrets encrypted, start a sync.

`ImapProvider` is the adapter the store's API uses (registered in SmtpSyncConfig.ready()).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.validators import RegexValidator
from django.db import transaction
from rest_framework import serializers

from emailplatform import topics
from messages.api.fields import StrictJsonInput
from messages.events import events_record
from messages.models import Account
from messages.providers import ProviderError

from .imap import ImapAuthError, ImapConnection, ImapError, ImapServer
from .models import ImapSettings, Security
from .sync import server_for


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
    sync_settings: dict[str, Any] = field(default_factory=dict)

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
            sync_settings=data.sync_settings,
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
            topics.publish_full_sync(account.pk, account.provider)
    return account


_host = RegexValidator(r"^[A-Za-z0-9._:\[\]-]+$", "Enter a host name or an IP address.")


class ImapSettingsInput(StrictJsonInput):
    """Server settings of an IMAP/SMTP account (the secrets travel beside them, write-only)."""

    imap_host = serializers.CharField(max_length=255, validators=[_host])
    imap_port = serializers.IntegerField(min_value=1, max_value=65535, default=993)
    imap_security = serializers.ChoiceField(choices=Security.choices, default=Security.SSL)
    username = serializers.CharField(
        max_length=320,
        required=False,
        allow_blank=True,
        default="",
        help_text="Login name; blank: the email address.",
    )
    smtp_host = serializers.CharField(
        max_length=255, required=False, allow_blank=True, default="", validators=[_host]
    )
    smtp_port = serializers.IntegerField(min_value=1, max_value=65535, default=465)
    smtp_security = serializers.ChoiceField(choices=Security.choices, default=Security.SSL)


def _account_input(validated_data: dict[str, Any]) -> ImapAccountInput:
    settings = validated_data.get("settings") or {}
    return ImapAccountInput(
        email_address=validated_data["email_address"],
        display_name=validated_data.get("display_name", ""),
        password=validated_data.get("password", ""),
        oauth2_token=validated_data.get("oauth2_token", ""),
        sync_settings=validated_data.get("sync_settings") or {},
        imap_host=settings["imap_host"],
        imap_port=settings.get("imap_port", 993),
        imap_security=settings.get("imap_security", Security.SSL),
        username=settings.get("username", ""),
        smtp_host=settings.get("smtp_host", ""),
        smtp_port=settings.get("smtp_port", 465),
        smtp_security=settings.get("smtp_security", Security.SSL),
    )


def _provider_error(exc: ImapError) -> ProviderError:
    code = "auth_failed" if isinstance(exc, ImapAuthError) else "connection_failed"
    return ProviderError(str(exc), code=code)


class ImapProvider:
    """The store's adapter for IMAP/SMTP accounts (see messages.providers)."""

    settings_serializer = ImapSettingsInput
    requires_credentials = True
    related_names = ("imap_settings",)

    def create_account(self, owner: AbstractBaseUser, validated_data: dict[str, Any]) -> Account:
        try:
            return imap_account_create(owner=owner, data=_account_input(validated_data))
        except ImapError as exc:
            raise _provider_error(exc) from exc

    def test_connection(self, target: dict[str, Any] | Account) -> None:
        if isinstance(target, Account):
            server = server_for(target)
        else:
            server = _account_input(target).server()
        try:
            imap_connection_test(server)
        except ImapError as exc:
            raise _provider_error(exc) from exc

    def describe(self, account: Account) -> dict[str, Any]:
        try:
            settings = account.imap_settings
        except ImapSettings.DoesNotExist:
            return {}
        return {
            "imap_host": settings.imap_host,
            "imap_port": settings.imap_port,
            "imap_security": settings.imap_security,
            "username": settings.username,
            "smtp_host": settings.smtp_host,
            "smtp_port": settings.smtp_port,
            "smtp_security": settings.smtp_security,
        }
