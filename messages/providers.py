"""Provider adapters: how the store creates and checks accounts of providers it does not know.

Dependency inversion: a provider app (smtp_sync, gmail_sync, ...) registers an adapter in its
AppConfig.ready(); the store and its API only ever talk to this registry, so `messages` never
imports a sync app and a new provider is a new app that registers itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from django.db import transaction
from rest_framework import serializers

from .events import events_record
from .models import Account

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser


class ProviderError(Exception):
    """The provider refused the account or could not be reached.

    `code` is "auth_failed" when the credentials were refused (retrying will not help) and
    "connection_failed" otherwise; the message is readable by the account's owner.
    """

    def __init__(self, message: str, *, code: str = "connection_failed") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class UnknownProvider(KeyError):
    pass


class ProviderAdapter(Protocol):
    """What a provider app offers the store.

    `create_account` receives the API's validated data: email_address, display_name,
    sync_settings, password, oauth2_token and `settings` (validated by `settings_serializer`).
    """

    settings_serializer: type[serializers.Serializer]
    requires_credentials: bool
    # Reverse one-to-one relations of Account that `describe` reads (for select_related).
    related_names: tuple[str, ...]

    def create_account(self, owner: AbstractBaseUser, validated_data: dict[str, Any]) -> Account:
        """Test the connection, then store the account; raises ProviderError."""
        ...

    def test_connection(self, target: dict[str, Any] | Account) -> None:
        """Log in with the given data or a stored account's; raises ProviderError."""
        ...

    def describe(self, account: Account) -> dict[str, Any]:
        """The account's provider settings as the owner may see them: never a secret."""
        ...


class AuthorizingProvider(Protocol):
    """What a provider whose accounts are connected on the provider's own consent screen
    (OAuth) adds: the API's `POST /api/accounts/<provider>/authorize/` calls it."""

    def authorization_start(self, user: AbstractBaseUser, request: Any) -> str:
        """The consent screen's URL for USER (REQUEST: the HttpRequest, for the callback's
        address); raises ProviderError."""
        ...


class ProviderCommand(Protocol):
    """A provider's part of `manage.py add_account --provider <name>` (the adapter's optional
    `command` attribute): its own options, and how it adds an account from them."""

    def add_arguments(self, group: Any) -> None:
        """Options of this provider only (an argparse group; names unique across providers)."""
        ...

    def handle(self, owner: AbstractBaseUser, options: dict[str, Any]) -> Account:
        """Add the account; raises django.core.management.CommandError with the reason."""
        ...


def authorization_start(provider_name: str, user: AbstractBaseUser, request: Any) -> str | None:
    """The consent URL of PROVIDER_NAME for USER; None when its accounts are not connected
    through a consent screen. Raises UnknownProvider and the adapter's ProviderError."""
    start = getattr(get_adapter(provider_name), "authorization_start", None)
    return None if start is None else start(user, request)


_registry: dict[str, ProviderAdapter] = {}


def register(provider_name: str, adapter: ProviderAdapter) -> None:
    _registry[provider_name] = adapter


def get_adapter(provider_name: str) -> ProviderAdapter:
    try:
        return _registry[provider_name]
    except KeyError:
        raise UnknownProvider(provider_name) from None


def provider_names() -> list[str]:
    return sorted(_registry)


def related_names() -> list[str]:
    return sorted({name for adapter in _registry.values() for name in adapter.related_names})


class NoSettings(serializers.Serializer):
    """A provider without settings of its own."""


class LocalProvider:
    """Accounts holding imported mail only (`import_mail`): nothing to connect to."""

    settings_serializer = NoSettings
    requires_credentials = False
    related_names: tuple[str, ...] = ()

    def create_account(self, owner: AbstractBaseUser, validated_data: dict[str, Any]) -> Account:
        with transaction.atomic():
            account = Account.objects.create(
                owner=owner,
                provider=Account.Provider.LOCAL,
                email_address=validated_data["email_address"],
                display_name=validated_data.get("display_name", ""),
                sync_settings=validated_data.get("sync_settings") or {},
            )
            events_record(account, "account", "created", [account.pk])
        return account

    def test_connection(self, target: dict[str, Any] | Account) -> None:
        return None

    def describe(self, account: Account) -> dict[str, Any]:
        return {}


register(Account.Provider.LOCAL.value, LocalProvider())
