"""Credentials at rest: MultiFernet over the keys in settings.CREDENTIALS_KEYS (newest first)."""

from __future__ import annotations

import json
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class CredentialsError(Exception):
    """Stored credentials cannot be decrypted with any configured key."""


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ImproperlyConfigured(
            "CREDENTIALS_KEYS is not set: generate one with `python -c "
            "'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`"
        )
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except ValueError as exc:
        raise ImproperlyConfigured(f"CREDENTIALS_KEYS holds an invalid Fernet key: {exc}") from exc


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.CREDENTIALS_KEYS))


def encrypt_json(value: dict) -> bytes:
    return fernet().encrypt(json.dumps(value).encode())


def decrypt_json(token: bytes) -> dict:
    try:
        return json.loads(fernet().decrypt(token))
    except InvalidToken as exc:
        raise CredentialsError("stored credentials do not decrypt with any configured key") from exc


def rotate(token: bytes) -> bytes:
    """Re-encrypt a token under the newest key."""
    return fernet().rotate(token)
