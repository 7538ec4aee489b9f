"""OAuth 2.0 as Google's token endpoint does it: the authorization_code grant (with PKCE) of
the web server flow, and the refresh_token grant.

Google's "Using OAuth 2.0 for Web Server Applications": a code is used once and lives minutes;
the exchange names the same redirect_uri as the authorization request; the client
authenticates in the body (client_secret_post) or with HTTP Basic (client_secret_basic); a
PKCE code_verifier must hash (S256) to the request's code_challenge; a refresh token comes
back only for access_type=offline, on a user's first consent to the client or with
prompt=consent; `scope` answers what the user granted (granular consent: maybe less).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass, field

ACCESS_TOKEN_LIFETIME = 3599
CODE_LIFETIME = 600
MODIFY_SCOPE = "https://www.googleapis.com/auth/gmail.modify"


@dataclass
class _Access:
    email: str
    expires_at: float


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    email: str
    scopes: list[str]
    code_challenge: str
    offline: bool
    force_refresh_token: bool
    expires_at: float = field(default_factory=lambda: time.time() + CODE_LIFETIME)


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
        self._codes: dict[str, _Code] = {}
        self._scopes: dict[str, list[str]] = {}  # refresh token -> scopes granted with it
        self._consented: set[tuple[str, str]] = set()  # (client_id, email)
        self._lock = threading.Lock()
        self.refreshes = 0
        self.exchanges = 0

    def add_client(self, client_id: str, client_secret: str) -> None:
        self._clients[client_id] = client_secret

    def grant(self, email: str, scopes: list[str] | None = None) -> str:
        """A new refresh token for the user, as the consent screen would give; with SCOPES,
        its refreshes answer those (else the scopes the refresh asks for)."""
        token = "1//" + secrets.token_urlsafe(24)
        with self._lock:
            self._refresh[token] = email
            if scopes is not None:
                self._scopes[token] = list(scopes)
        return token

    def issued(self, email: str) -> list[str]:
        """The refresh tokens given for EMAIL, oldest first (what a test looks for in logs)."""
        with self._lock:
            return [token for token, owner in self._refresh.items() if owner == email]

    def knows_client(self, client_id: str) -> bool:
        return client_id in self._clients

    def issue_code(
        self,
        *,
        client_id: str,
        redirect_uri: str,
        email: str,
        scopes: list[str],
        code_challenge: str,
        offline: bool,
        prompt_consent: bool,
    ) -> str:
        """An authorization code for what the user just consented to."""
        code = "4/0" + secrets.token_urlsafe(32)
        with self._lock:
            first = (client_id, email) not in self._consented
            self._consented.add((client_id, email))
            self._codes[code] = _Code(
                client_id=client_id,
                redirect_uri=redirect_uri,
                email=email,
                scopes=scopes,
                code_challenge=code_challenge,
                offline=offline,
                force_refresh_token=prompt_consent or first,
            )
        return code

    def revoke(self, refresh_token: str) -> None:
        """The user removed the app's access: the refresh token and its access tokens die."""
        with self._lock:
            self._revoked.add(refresh_token)
            email = self._refresh.get(refresh_token)
            for key in [k for k, v in self._access.items() if v.email == email]:
                del self._access[key]

    def expire_access_tokens(self) -> None:
        with self._lock:
            for access in self._access.values():
                access.expires_at = 0

    def token(self, form: dict[str, str], authorization: str | None = None) -> dict:
        """POST /token: the grant FORM names; client credentials in the form or in AUTHORIZATION
        (HTTP Basic)."""
        grant_type = form.get("grant_type")
        if grant_type not in ("refresh_token", "authorization_code"):
            raise TokenError(400, "unsupported_grant_type", "Invalid grant_type.")
        client_id = self._client_of(form, authorization)
        if grant_type == "authorization_code":
            return self._exchange(form, client_id)
        return self.refresh(form, client_id)

    def _client_of(self, form: dict[str, str], authorization: str | None) -> str:
        client_id, secret = form.get("client_id", ""), form.get("client_secret")
        if authorization and authorization.startswith("Basic "):
            try:
                decoded = base64.b64decode(authorization.removeprefix("Basic ").strip()).decode()
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            client_id, _, secret = decoded.partition(":")
        if not client_id or self._clients.get(client_id) != secret:
            raise TokenError(401, "invalid_client", "The OAuth client was not found.")
        return client_id

    def _exchange(self, form: dict[str, str], client_id: str) -> dict:
        with self._lock:
            grant = self._codes.pop(form.get("code", ""), None)  # used once, whatever follows
        if grant is None or grant.expires_at <= time.time():
            raise TokenError(400, "invalid_grant", "Malformed auth code.")
        if grant.client_id != client_id:
            raise TokenError(400, "invalid_grant", "The code was issued to another client.")
        if form.get("redirect_uri") != grant.redirect_uri:
            raise TokenError(400, "redirect_uri_mismatch", "Bad Request")
        verifier = form.get("code_verifier", "")
        digest = hashlib.sha256(verifier.encode()).digest()
        challenge = base64.urlsafe_b64encode(digest).decode().rstrip("=")
        if not verifier or not secrets.compare_digest(challenge, grant.code_challenge):
            raise TokenError(400, "invalid_grant", "Invalid code verifier.")
        access = "ya29." + secrets.token_urlsafe(32)
        answer = {
            "access_token": access,
            "expires_in": ACCESS_TOKEN_LIFETIME,
            "scope": " ".join(grant.scopes),
            "token_type": "Bearer",
        }
        with self._lock:
            self._access[access] = _Access(grant.email, time.time() + ACCESS_TOKEN_LIFETIME)
            self.exchanges += 1
        if grant.offline and grant.force_refresh_token:
            answer["refresh_token"] = self.grant(grant.email, grant.scopes)
        return answer

    def refresh(self, form: dict[str, str], client_id: str | None = None) -> dict:
        if client_id is None:
            client_id = self._client_of(form, None)
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
            "scope": " ".join(self._scopes.get(token, ())) or form.get("scope") or MODIFY_SCOPE,
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
