"""Creating IMAP accounts: test the connection first, store secrets encrypted, start a sync.

`ImapProvider` is the adapter the store's API uses (registered in SmtpSyncConfig.ready()).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from django.conf import settings as django_settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from rest_framework import serializers

from emailplatform import netguard, topics
from messages.api.fields import StrictJsonInput
from messages.events import events_record
from messages.models import Account
from messages.providers import ProviderError

from .idle_nudge import idle_refresh_request
from .imap import ImapAuthError, ImapConnection, ImapError, ImapRefusedError, ImapServer
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
    smtp_username: str = ""  # blank: the IMAP username
    smtp_trust_self_signed: bool = False
    display_name: str = ""
    sync_settings: dict[str, Any] = field(default_factory=dict)
    # Internal addresses allowed for this account (decided by who typed the hosts: see
    # may_reach_internal); kept on the account, so its syncs apply the same rule.
    allow_internal: bool = False

    def server(self) -> ImapServer:
        return ImapServer(
            host=self.imap_host,
            port=self.imap_port,
            security=self.imap_security,
            username=self.username or self.email_address,
            password=self.password,
            oauth2_token=self.oauth2_token,
            timeout=django_settings.OUTBOUND_TEST_TIMEOUT_SECONDS,
            allow_internal=self.allow_internal,
        )


class ServerSettingRefused(ImapError):
    """A server setting the guard refuses (an internal address, plain text to a host not on
    the allow list, an invalid host): a validation error of FIELD, not a server's answer."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


def may_reach_internal(user: AbstractBaseUser | None) -> bool:
    """Whether hosts typed by USER may be internal addresses: staff only, and only while
    OUTBOUND_STAFF_ALLOW_INTERNAL is on (the allow list applies to everyone)."""
    return bool(
        user is not None
        and getattr(user, "is_active", False)
        and getattr(user, "is_staff", False)
        and django_settings.OUTBOUND_STAFF_ALLOW_INTERNAL
    )


def imap_connection_test(
    server: ImapServer, connection_factory: Callable[[ImapServer], ImapConnection] = ImapConnection
) -> list[str]:
    """Log in and out; return the capabilities. Raises ImapError with a readable reason.

    The connection goes through the guard (emailplatform.netguard) with the server's own
    rule; a connection test uses the short OUTBOUND_TEST_TIMEOUT_SECONDS."""
    timeout = min(server.timeout, django_settings.OUTBOUND_TEST_TIMEOUT_SECONDS)
    with connection_factory(replace(server, timeout=timeout)) as conn:
        conn.list_folders()
        return sorted(conn.capabilities)


def _normalized(host: str, field_name: str) -> str:
    try:
        return netguard.normalize_host(host)
    except netguard.HostInvalid as exc:
        raise ServerSettingRefused(field_name, str(exc)) from exc


def _refused_field(exc: ImapRefusedError, prefix: str = "imap") -> ServerSettingRefused:
    name = "security" if exc.kind == "plaintext" else "host"
    return ServerSettingRefused(f"{prefix}_{name}", str(exc))


def server_settings_check(
    prefix: str, host: str, port: int, security: str, *, allow_internal: bool
) -> None:
    """A server's host against the guard's rules, resolved now, without connecting (the
    admin's changed settings; the SMTP server, as sending is not built yet: the sender will
    connect through netguard.connect with the account's rule). PREFIX: "imap" or "smtp".
    Raises ServerSettingRefused naming PREFIX_host or PREFIX_security."""
    if not host:
        return
    try:
        netguard.resolve(
            host,
            port,
            policy=netguard.policy_for(allow_internal),
            plaintext=security == Security.NONE,
        )
    except netguard.AddressRefused as exc:
        field_name = f"{prefix}_security" if exc.kind == "plaintext" else f"{prefix}_host"
        raise ServerSettingRefused(field_name, str(exc)) from exc
    except netguard.GuardError as exc:
        raise ServerSettingRefused(f"{prefix}_host", str(exc)) from exc


def smtp_settings_check(data: ImapAccountInput) -> None:
    """The account's SMTP server against the guard, with the account's rule."""
    server_settings_check(
        "smtp",
        data.smtp_host,
        data.smtp_port,
        data.smtp_security,
        allow_internal=data.allow_internal,
    )


def imap_account_create(
    *,
    owner: AbstractBaseUser,
    data: ImapAccountInput,
    test_connection: bool = True,
    start_sync: bool = True,
    capabilities: list[str] | None = None,
) -> Account:
    """Raises ServerSettingRefused for a host the guard refuses, ImapError when the server
    cannot be reached or refuses the login. `data.allow_internal` is kept on the account.
    CAPABILITIES: the server's, from a connection test the caller made (test_connection off)."""
    data = replace(
        data,
        imap_host=_normalized(data.imap_host, "imap_host"),
        smtp_host=_normalized(data.smtp_host, "smtp_host") if data.smtp_host else "",
    )
    capabilities = list(capabilities or [])
    if test_connection:
        try:
            capabilities = imap_connection_test(data.server())
        except ImapRefusedError as exc:
            raise _refused_field(exc) from exc
        smtp_settings_check(data)
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
            smtp_username=data.smtp_username,
            smtp_trust_self_signed=data.smtp_trust_self_signed,
            capabilities=capabilities,
            allow_internal=data.allow_internal,
        )
        events_record(account, "account", "created", [account.pk])
        if start_sync:
            topics.publish_full_sync(account.pk, account.provider)
        idle_refresh_request()
    return account


class HostField(serializers.CharField):
    """A host name (IDNA-encoded), an IPv4 address or an IPv6 address, bracketed or not; the
    value is the normalized host ("[::1]" -> "::1", "Mail.Example." -> "mail.example")."""

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data)
        if value == "" and self.allow_blank:
            return value
        try:
            return netguard.normalize_host(value)
        except netguard.HostInvalid as exc:
            raise serializers.ValidationError(str(exc)) from exc


class ImapSettingsInput(StrictJsonInput):
    """Server settings of an IMAP/SMTP account (the secrets travel beside them, write-only)."""

    imap_host = HostField(max_length=255)
    imap_port = serializers.IntegerField(min_value=1, max_value=65535, default=993)
    imap_security = serializers.ChoiceField(
        choices=Security.choices,
        default=Security.SSL,
        help_text="none (plain IMAP): only for hosts on the operator's allow list.",
    )
    username = serializers.CharField(
        max_length=320,
        required=False,
        allow_blank=True,
        default="",
        help_text="Login name; blank: the email address.",
    )
    smtp_host = HostField(max_length=255, required=False, allow_blank=True, default="")
    smtp_port = serializers.IntegerField(min_value=1, max_value=65535, default=465)
    smtp_security = serializers.ChoiceField(choices=Security.choices, default=Security.SSL)
    smtp_trust_self_signed = serializers.BooleanField(
        default=False,
        help_text="Accept the SMTP server's certificate without verifying it (self-signed).",
    )


def _account_input(
    validated_data: dict[str, Any], *, allow_internal: bool = False
) -> ImapAccountInput:
    settings = validated_data.get("settings") or {}
    return ImapAccountInput(
        allow_internal=allow_internal,
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
        smtp_trust_self_signed=settings.get("smtp_trust_self_signed", False),
    )


def _provider_error(exc: ImapError) -> ProviderError:
    code = "auth_failed" if isinstance(exc, ImapAuthError) else "connection_failed"
    return ProviderError(str(exc), code=code)


class ImapProvider:
    """The store's adapter for IMAP/SMTP accounts (see messages.providers)."""

    settings_serializer = ImapSettingsInput
    requires_credentials = True
    related_names = ("imap_settings",)

    @property
    def command(self) -> Any:
        """The IMAP part of `manage.py add_account`."""
        from .cli import ImapCommand

        return ImapCommand()

    def create_account(self, owner: AbstractBaseUser, validated_data: dict[str, Any]) -> Account:
        """The owner is the user who typed the hosts: staff may reach internal addresses
        (may_reach_internal); a refused host is a 400 naming settings.<field>."""
        data = _account_input(validated_data, allow_internal=may_reach_internal(owner))
        try:
            return imap_account_create(owner=owner, data=data)
        except ServerSettingRefused as exc:
            raise serializers.ValidationError({"settings": {exc.field: [str(exc)]}}) from exc
        except ImapError as exc:
            raise _provider_error(exc) from exc

    def test_connection(self, target: dict[str, Any] | Account) -> None:
        """A stored account is tested with the rule it was created with (allow_internal)."""
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
            "smtp_trust_self_signed": settings.smtp_trust_self_signed,
        }
