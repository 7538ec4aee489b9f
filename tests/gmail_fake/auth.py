"""OAuth 2.0 as Google's token endpoint does it, for the refresh_token grant only."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass

ACCESS_TOKEN_LIFETIME = 3599


@dataclass
class _Access:
    email: str
    expires_at: float


class TokenError(Exception):
    """An OAuth error response (`{"error", "error_description"}`, status 400 or 401)."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.body = {"error": error, "error_description": description}


class Tokens:
    def __init__(self) -> None:
        self._refresh: dict[str, str] = {}
        self._revoked: set[str] = set()
        self._access: dict[str, _Access] = {}
        self._clients: dict[str, str] = {}
        self._lock = threading.Lock()
        self.refreshes = 0

    def add_client(self, client_id: str, client_secret: str) -> None:
        self._clients[client_id] = client_secret

    def grant(self, email: str) -> str:
        """A new refresh token for the user, as the consent screen would give."""
        token = "1//" + secrets.token_urlsafe(24)
        with self._lock:
            self._refresh[token] = email
        return token

    def revoke(self, refresh_token: str) -> None:
        """The user removed the app's access: the refresh token and its access tokens die."""
        with self._lock:
            self._revoked.add(refresh_token)
            email = self._refresh.get(refresh_token)
            for key in [k for k, v in self._access.items() if v.email == email]:
                del self._access[key]

    def forget(self, authorization: str | None) -> None:
        """The access token of an `Authorization: Bearer` header is no longer accepted."""
        token = (authorization or "").removeprefix("Bearer ").strip()
        with self._lock:
            self._access.pop(token, None)

    def expire_access_tokens(self) -> None:
        with self._lock:
            for access in self._access.values():
                access.expires_at = 0

    def refresh(self, form: dict[str, str]) -> dict:
        if form.get("grant_type") != "refresh_token":
            raise TokenError(400, "unsupported_grant_type", "Invalid grant_type.")
        client_id = form.get("client_id", "")
        if self._clients.get(client_id) != form.get("client_secret"):
            raise TokenError(401, "invalid_client", "The OAuth client was not found.")
        token = form.get("refresh_token", "")
        with self._lock:
            email = self._refresh.get(token)
            if email is None or token in self._revoked:
                raise TokenError(400, "invalid_grant", "Token has been expired or revoked.")
            access = "ya29." + secrets.token_urlsafe(32)
            self._access[access] = _Access(email, time.time() + ACCESS_TOKEN_LIFETIME)
            self.refreshes += 1
        return {
            "access_token": access,
            "expires_in": ACCESS_TOKEN_LIFETIME,
            "scope": form.get("scope") or "https://www.googleapis.com/auth/gmail.modify",
            "token_type": "Bearer",
        }

    def user_of(self, authorization: str | None) -> str | None:
        """The user an `Authorization: Bearer` header speaks for, or None."""
        if not authorization or not authorization.startswith("Bearer "):
            return None
        with self._lock:
            access = self._access.get(authorization.removeprefix("Bearer ").strip())
            if access is None or access.expires_at <= time.time():
                return None
            return access.email
