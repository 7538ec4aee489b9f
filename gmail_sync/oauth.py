"""The OAuth 2.0 web server flow with Google (google-auth-oauthlib's Flow).

Start: a consent URL for exactly the platform's scopes (gmail.modify, gmail.send), offline
access and a forced consent screen (so a refresh token always comes back), PKCE S256, and a
`state` remembered server-side (gmail_sync.oauth_state). Finish: the state is taken once and
must have been started by the same user when the callback comes with a logged-in session (an
admin-started flow requires it); then the code is exchanged at GMAIL_TOKEN_URI with the
verifier and the same redirect_uri.

The endpoints are Google's, from settings: nothing a user typed is ever fetched or followed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import requests
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from google_auth_oauthlib.flow import Flow
from oauthlib.oauth2.rfc6749.errors import OAuth2Error

from .client import SCOPES
from .oauth_state import PendingAuthorization, new_state, state_save, state_take


class AuthorizationError(Exception):
    """The flow cannot go on: `message` for the user, `code` for clients, `status` HTTP."""

    def __init__(self, message: str, *, code: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


@dataclass(frozen=True)
class Grant:
    refresh_token: str
    scopes: list[str]
    pending: PendingAuthorization


def _drop_debug(record: logging.LogRecord) -> bool:
    return record.levelno > logging.DEBUG


def quiet_token_logs() -> None:
    """requests-oauthlib logs the token request (Basic auth with the client secret) and the
    answer (the refresh token) at DEBUG: those records never leave it."""
    logger = logging.getLogger("requests_oauthlib.oauth2_session")
    if _drop_debug not in logger.filters:
        logger.addFilter(_drop_debug)


def _flow(redirect_uri: str, code_verifier: str | None = None) -> Flow:
    if not (settings.GMAIL_CLIENT_ID and settings.GMAIL_CLIENT_SECRET):
        raise AuthorizationError(
            "Gmail is not set up on this platform (no OAuth client).",
            code="provider_unavailable",
            status=503,
        )
    config = {
        "web": {
            "client_id": settings.GMAIL_CLIENT_ID,
            "client_secret": settings.GMAIL_CLIENT_SECRET,
            "auth_uri": settings.GMAIL_AUTH_URI,
            "token_uri": settings.GMAIL_TOKEN_URI,
        }
    }
    return Flow.from_client_config(
        config,
        scopes=list(SCOPES),
        redirect_uri=redirect_uri,
        code_verifier=code_verifier,
        autogenerate_code_verifier=code_verifier is None,
    )


def authorization_start(
    *, user: AbstractBaseUser, owner: AbstractBaseUser, redirect_uri: str, origin: str
) -> str:
    """The URL of Google's consent screen for a flow USER starts, connecting OWNER's account."""
    flow = _flow(redirect_uri)
    state = new_state()
    url, _ = flow.authorization_url(
        state=state,
        access_type="offline",
        prompt="consent",
    )
    state_save(
        state,
        user_id=user.pk,
        owner_id=owner.pk,
        code_verifier=flow.code_verifier,
        redirect_uri=redirect_uri,
        origin=origin,
    )
    return url


def authorization_finish(
    *, state: str, code: str, error: str, user: AbstractBaseUser | None
) -> Grant:
    """The callback's query (STATE, CODE or ERROR) as USER's browser brings it back: the
    refresh token and the scopes granted. Raises AuthorizationError; the state is spent
    whatever happens."""
    pending = state_take(state)
    if pending is None:
        raise AuthorizationError(
            "This sign-in link is invalid, was already used or has expired: "
            "start connecting the account again.",
            code="invalid_state",
        )
    signed_in = user is not None and user.is_authenticated
    if (signed_in and user.pk != pending.user_id) or (pending.origin == "admin" and not signed_in):
        raise AuthorizationError(
            "This connection was started by another user.", code="permission_denied", status=403
        )
    if error:
        reason = "you declined" if error == "access_denied" else f"Google said {error}"
        raise AuthorizationError(
            f"The Gmail account was not connected: {reason}.", code="access_denied"
        )
    if not code:
        raise AuthorizationError("Google sent no authorization code.", code="invalid_request")
    token = _exchange(pending, code)
    scopes = token.get("scope") or []
    if isinstance(scopes, str):
        scopes = scopes.split()
    refresh_token = token.get("refresh_token")
    if not refresh_token:
        raise AuthorizationError(
            "Google gave no lasting access (no refresh token): connect the account again.",
            code="auth_failed",
        )
    return Grant(refresh_token=refresh_token, scopes=list(scopes), pending=pending)


def _exchange(pending: PendingAuthorization, code: str) -> dict[str, Any]:
    flow = _flow(pending.redirect_uri, pending.code_verifier)
    try:
        return dict(
            flow.fetch_token(
                code=code,
                timeout=settings.GMAIL_TIMEOUT_SECONDS,
                verify=settings.GMAIL_CA_CERTS or True,
            )
        )
    except Warning as changed:  # oauthlib: the scopes granted are not the ones asked for
        return dict(changed.token)  # type: ignore[attr-defined]
    except OAuth2Error as exc:
        raise AuthorizationError(
            f"Google refused the authorization ({exc.error}): connect the account again.",
            code="auth_failed",
        ) from exc
    except requests.RequestException as exc:
        raise AuthorizationError(
            "Google's token endpoint could not be reached; try again in a moment.",
            code="connection_failed",
            status=502,
        ) from exc
