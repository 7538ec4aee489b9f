"""What an OAuth `state` stands for while the user is at Google's consent screen.

The state is 256 random bits, given only to the user who started; the server keeps, under a
hash of it, who started, whose account it becomes, the PKCE code_verifier and the redirect_uri
(encrypted like credentials: the verifier is half of what redeems the code). It lives
GMAIL_OAUTH_STATE_SECONDS in the cache (Redis) and is taken at most once: of two callbacks
with the same state, only the one whose delete removed it goes on.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import asdict, dataclass

from django.conf import settings
from django.core.cache import cache

from messages.crypto import CredentialsError, decrypt_json, encrypt_json

ORIGINS = ("api", "admin")


@dataclass(frozen=True)
class PendingAuthorization:
    user_id: int  # who started the flow
    owner_id: int  # whose account it connects (the same, except for staff in the admin)
    code_verifier: str
    redirect_uri: str
    origin: str  # "api" or "admin"
    expires_at: float


def _key(state: str) -> str:
    return "gmail-oauth-state:" + hashlib.sha256(state.encode()).hexdigest()


def new_state() -> str:
    return secrets.token_urlsafe(32)


def state_save(
    state: str, *, user_id: int, owner_id: int, code_verifier: str, redirect_uri: str, origin: str
) -> PendingAuthorization:
    """Remember STATE for GMAIL_OAUTH_STATE_SECONDS."""
    seconds = settings.GMAIL_OAUTH_STATE_SECONDS
    pending = PendingAuthorization(
        user_id=user_id,
        owner_id=owner_id,
        code_verifier=code_verifier,
        redirect_uri=redirect_uri,
        origin=origin,
        expires_at=time.time() + seconds,
    )
    cache.set(_key(state), encrypt_json(asdict(pending)), timeout=max(1, seconds))
    return pending


def state_take(state: str) -> PendingAuthorization | None:
    """The authorization STATE stands for, once: None when unknown, used or expired."""
    if not state or len(state) > 200:
        return None
    key = _key(state)
    blob = cache.get(key)
    if blob is None or not cache.delete(key):
        return None
    try:
        pending = PendingAuthorization(**decrypt_json(blob))
    except (CredentialsError, TypeError):
        return None
    if pending.expires_at <= time.time():
        return None
    return pending
