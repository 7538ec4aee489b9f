"""Connecting Gmail accounts: the address comes from Google (users.getProfile), the refresh
token is stored encrypted, a new account gets a full sync and a reconnected one resumes.

`GmailProvider` is the adapter the store's API uses (registered in GmailSyncConfig.ready()).
The usual way in is the OAuth web flow (gmail_sync.oauth); an operator holding a refresh token
may connect with it (`manage.py add_account --provider gmail`, or the API as staff).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone
from rest_framework import serializers

from emailplatform import topics
from messages.api.fields import StrictJsonInput
from messages.events import events_record
from messages.models import Account
from messages.providers import ProviderError

from .client import SCOPES, GmailAuthError, GmailClient, GmailError
from .models import GmailSettings, WatchScope
from .oauth import AuthorizationError, authorization_finish, authorization_start

# The quota bucket of the one getProfile call made before the address is known.
CONNECTING_MAILBOX = "connecting"
AUTHORIZE_PATH = "/api/accounts/gmail/authorize/"


class GmailConnectError(Exception):
    """Connecting failed; `message` is readable by the user, `code` as the API's error codes:
    scope_missing, auth_failed, connection_failed, address_mismatch, account_deleting."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class Connected:
    account: Account
    created: bool


def missing_scopes(granted: Iterable[str]) -> list[str]:
    return [scope for scope in SCOPES if scope not in set(granted)]


def scopes_check(granted: Iterable[str] | None) -> None:
    """Refuse a grant without every scope the platform needs (granular consent lets the user
    untick some); None: not known (a bare refresh token whose access token was cached)."""
    if granted is None:
        return
    missing = missing_scopes(granted)
    if missing:
        names = ", ".join(scope.rsplit("/", 1)[-1] for scope in missing)
        raise GmailConnectError(
            f"Google did not grant all the access the platform needs (missing: {names}). "
            "Connect again and leave every Gmail permission ticked.",
            code="scope_missing",
        )


def gmail_profile(
    refresh_token: str, mailbox: str = CONNECTING_MAILBOX
) -> tuple[dict, list[str] | None]:
    """users.getProfile with REFRESH_TOKEN, and the scopes the token carries when Google said."""
    if not refresh_token:
        raise GmailConnectError("No Gmail refresh token was given.", code="auth_failed")
    client = GmailClient(refresh_token, mailbox)
    try:
        profile = client.profile()
    except GmailAuthError as exc:
        raise GmailConnectError(exc.message, code="auth_failed") from exc
    except GmailError as exc:
        raise GmailConnectError(exc.message, code="connection_failed") from exc
    granted = client.credentials.granted_scopes
    return profile, list(granted) if granted is not None else None


def gmail_account_connect(
    *,
    owner: AbstractBaseUser,
    refresh_token: str,
    scopes: Iterable[str] | None = None,
    expected_address: str | None = None,
    settings: dict[str, Any] | None = None,
    start_sync: bool = True,
) -> Connected:
    """Store REFRESH_TOKEN for the Gmail mailbox it opens, as OWNER's account.

    SCOPES: what the grant carries (checked before anything is stored; None: ask Google).
    The owner's account of that address, if any, is reconnected: new token, active again,
    its history id kept (the next sync resumes from it). Otherwise a new account, recorded in
    the changes feed, with a full sync published."""
    if scopes is not None:
        scopes_check(scopes)
    profile, granted = gmail_profile(refresh_token)
    if scopes is None:
        scopes_check(granted)
    address = profile["emailAddress"]
    if expected_address and expected_address.lower() != address.lower():
        raise GmailConnectError(
            f"The token opens the mailbox {address}, not {expected_address}.",
            code="address_mismatch",
        )
    stored_scopes = sorted(scopes if scopes is not None else (granted or SCOPES))
    try:
        return _connect(owner, address, refresh_token, stored_scopes, settings or {}, start_sync)
    except IntegrityError:  # the same address connected at the same moment: reconnect it
        return _connect(owner, address, refresh_token, stored_scopes, settings or {}, start_sync)


def _connect(
    owner: AbstractBaseUser,
    address: str,
    refresh_token: str,
    scopes: list[str],
    settings: dict[str, Any],
    start_sync: bool,
) -> Connected:
    with transaction.atomic():
        account = (
            Account.objects.select_for_update()
            .filter(owner=owner, provider=Account.Provider.GMAIL, email_address__iexact=address)
            .first()
        )
        if account is not None:
            _reconnect(account, refresh_token, scopes, start_sync)
            return Connected(account, created=False)
        account = Account(owner=owner, provider=Account.Provider.GMAIL, email_address=address)
        account.set_credentials({"refresh_token": refresh_token})
        account.save()
        GmailSettings.objects.create(account=account, scopes=scopes, **settings)
        events_record(account, "account", "created", [account.pk])
        if start_sync:
            topics.publish_full_sync(account.pk, account.provider)
    return Connected(account, created=True)


def _reconnect(account: Account, refresh_token: str, scopes: list[str], start_sync: bool) -> None:
    """A new token for a known account: active again (unless its owner paused it), its sync
    cursor untouched, and a sync to catch up (incremental when there is a cursor)."""
    if account.status == Account.Status.DELETING:
        raise GmailConnectError(
            "This account is being deleted; connect it again once it is gone.",
            code="account_deleting",
        )
    account.set_credentials({**account.get_credentials(), "refresh_token": refresh_token})
    if account.status != Account.Status.PAUSED:
        account.status = Account.Status.ACTIVE
    account.last_error = ""
    account.auth_failures = 0
    account.auth_retest_at = None
    account.updated_at = timezone.now()
    account.save(
        update_fields=[
            "credentials_encrypted",
            "status",
            "last_error",
            "auth_failures",
            "auth_retest_at",
            "updated_at",
        ]
    )
    gmail, _ = GmailSettings.objects.get_or_create(account=account)
    gmail.scopes = scopes
    gmail.save(update_fields=["scopes"])
    events_record(account, "account", "updated", [account.pk])
    if start_sync and account.status == Account.Status.ACTIVE:
        if gmail.history_id is None:
            topics.publish_full_sync(account.pk, account.provider)
        else:
            topics.publish_incremental_sync(account.pk, account.provider)


class GmailSettingsInput(StrictJsonInput):
    """Gmail settings of an account. Accounts are connected through Google's consent screen
    (POST /api/accounts/gmail/authorize/); staff may give a refresh token instead."""

    include_spam_trash = serializers.BooleanField(
        default=False, help_text="Sync SPAM and TRASH too."
    )
    watch_scope = serializers.ChoiceField(
        choices=WatchScope.choices,
        default=WatchScope.INBOX,
        help_text="Which changes Gmail pushes: INBOX only or every label.",
    )
    refresh_token = serializers.CharField(
        max_length=4096,
        required=False,
        write_only=True,
        trim_whitespace=False,
        help_text="Staff only, write-only: a refresh token of this platform's OAuth client.",
    )


def _provider_error(exc: GmailConnectError) -> ProviderError:
    return ProviderError(exc.message, code=exc.code)


def _stored_refresh_token(account: Account) -> str:
    token = account.get_credentials().get("refresh_token", "")
    if not token:
        raise ProviderError(
            "No Gmail authorization is stored: connect the account again.", code="auth_failed"
        )
    return token


class GmailProvider:
    """The store's adapter for Gmail accounts (see messages.providers)."""

    settings_serializer = GmailSettingsInput
    # No password: the credential is a refresh token from the OAuth flow.
    requires_credentials = False
    related_names = ("gmail_settings",)

    @property
    def command(self) -> Any:
        """The Gmail part of `manage.py add_account --provider gmail`."""
        from .cli import GmailCommand

        return GmailCommand()

    def create_account(self, owner: AbstractBaseUser, validated_data: dict[str, Any]) -> Account:
        settings = dict(validated_data.get("settings") or {})
        refresh_token = settings.pop("refresh_token", "")
        if not refresh_token or not getattr(owner, "is_staff", False):
            raise ProviderError(
                "Gmail accounts are connected through Google's consent screen: "
                f"POST {AUTHORIZE_PATH} and open the authorization_url it answers.",
                code="oauth_required",
            )
        try:
            connected = gmail_account_connect(
                owner=owner,
                refresh_token=refresh_token,
                expected_address=validated_data["email_address"],
                settings=settings,
            )
        except GmailConnectError as exc:
            raise _provider_error(exc) from exc
        return connected.account

    def test_connection(self, target: dict[str, Any] | Account) -> None:
        if isinstance(target, Account):
            refresh_token, mailbox = _stored_refresh_token(target), target.email_address
        else:
            refresh_token = (target.get("settings") or {}).get("refresh_token", "")
            mailbox = target.get("email_address") or CONNECTING_MAILBOX
        try:
            gmail_profile(refresh_token, mailbox)
        except GmailConnectError as exc:
            raise _provider_error(exc) from exc

    def describe(self, account: Account) -> dict[str, Any]:
        try:
            gmail = account.gmail_settings
        except GmailSettings.DoesNotExist:
            return {}
        return {
            "include_spam_trash": gmail.include_spam_trash,
            "watch_scope": gmail.watch_scope,
            "scopes": list(gmail.scopes),
        }

    def authorization_start(self, user: AbstractBaseUser, request: Any) -> str:
        """The API's start of the OAuth flow: the URL of Google's consent screen."""
        try:
            return authorization_start(
                user=user, owner=user, redirect_uri=redirect_uri_for(request), origin="api"
            )
        except AuthorizationError as exc:
            raise ProviderError(exc.message, code=exc.code) from exc


def account_connect_callback(
    *, state: str, code: str, error: str, user: AbstractBaseUser | None
) -> tuple[Connected, str]:
    """The OAuth callback: finish the flow, then connect the account it was started for.
    Returns the connection and the flow's origin ("api" or "admin"). Raises
    AuthorizationError or GmailConnectError; nothing is stored then."""
    grant = authorization_finish(state=state, code=code, error=error, user=user)
    owner = get_user_model().objects.filter(pk=grant.pending.owner_id, is_active=True).first()
    if owner is None:
        raise AuthorizationError("The account's owner no longer exists.", code="invalid_state")
    connected = gmail_account_connect(
        owner=owner, refresh_token=grant.refresh_token, scopes=grant.scopes
    )
    return connected, grant.pending.origin


def redirect_uri_for(request: Any) -> str:
    """GMAIL_OAUTH_REDIRECT_URI, or this platform's callback as the request reached it (the
    host is one of ALLOWED_HOSTS); it must be registered with the OAuth client at Google."""
    configured = django_settings.GMAIL_OAUTH_REDIRECT_URI
    if configured:
        return configured
    return request.build_absolute_uri(reverse("gmail_sync:oauth-callback"))
