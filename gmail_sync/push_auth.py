"""Who may push: Pub/Sub's OIDC token on each push, verified by google-auth against Google's
certificates, which are cached for their Cache-Control max-age (one fetch per process and
period, not one per push) and fetched again when a token names a key id they lack (Google
rotates its keys), at most once per REFETCH_SECONDS for unknown ids.

An endpoint without GMAIL_PUSH_AUDIENCE and GMAIL_PUSH_SERVICE_ACCOUNT refuses everything:
without the service account anyone's Google service account could mint a token for the
audience.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import google_auth_httplib2
import httplib2
from django.conf import settings
from google.auth import exceptions as google_exceptions
from google.auth import jwt

logger = logging.getLogger(__name__)

ISSUERS = frozenset({"accounts.google.com", "https://accounts.google.com"})
ALGORITHM = "RS256"
CLOCK_SKEW_SECONDS = 30
DEFAULT_MAX_AGE = 300  # certificates served without a max-age
MAX_MAX_AGE = 24 * 60 * 60
REFETCH_SECONDS = 30.0
FETCH_TIMEOUT = 10.0
TOKEN_ERRORS = (ValueError, TypeError, KeyError, google_exceptions.GoogleAuthError)


class PushRefused(Exception):
    """A push that is not Pub/Sub's: 401 (no valid token) or 403 (someone else's)."""

    status = 401

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PushForbidden(PushRefused):
    status = 403


class CertsUnavailable(Exception):
    """Google's certificates could not be fetched and none are cached: try again later."""


@dataclass(frozen=True)
class FetchedCerts:
    certs: dict[str, str]
    max_age: float


def fetch_certs(url: str) -> FetchedCerts:
    request = google_auth_httplib2.Request(httplib2.Http(timeout=FETCH_TIMEOUT))
    try:
        response = request(url, method="GET")
    except (google_exceptions.TransportError, httplib2.HttpLib2Error, OSError) as exc:
        raise CertsUnavailable(f"certificates at {url}: {exc}") from exc
    if response.status != 200:
        raise CertsUnavailable(f"certificates at {url}: HTTP {response.status}")
    try:
        certs = json.loads(response.data)
    except ValueError as exc:
        raise CertsUnavailable(f"certificates at {url}: not JSON") from exc
    if not isinstance(certs, dict) or not all(isinstance(v, str) for v in certs.values()):
        raise CertsUnavailable(f"certificates at {url}: not a {{key id: certificate}} map")
    return FetchedCerts(certs, max_age_of(response.headers.get("cache-control", "")))


def max_age_of(cache_control: str) -> float:
    if re.search(r"\bno-(store|cache)\b", cache_control):
        return 0.0
    match = re.search(r"\bmax-age=(\d+)", cache_control)
    return float(min(int(match.group(1)), MAX_MAX_AGE)) if match else float(DEFAULT_MAX_AGE)


class CertCache:
    """One URL's certificates, shared by the threads of a process."""

    def __init__(
        self,
        url: str,
        *,
        fetch: Callable[[str], FetchedCerts] = fetch_certs,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._fetch = fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._certs: dict[str, str] | None = None
        self._expires = 0.0
        self._last_miss_fetch = float("-inf")

    def certs_for(self, key_id: str | None) -> Mapping[str, str]:
        with self._lock:
            now = self._clock()
            if self._certs is None or now >= self._expires:
                self._refresh(now)
            elif (
                key_id
                and key_id not in self._certs
                and now - self._last_miss_fetch >= REFETCH_SECONDS
            ):
                self._last_miss_fetch = now
                self._refresh(now)
            assert self._certs is not None
            return self._certs

    def _refresh(self, now: float) -> None:
        try:
            fetched = self._fetch(self.url)
        except CertsUnavailable:
            if self._certs is None:
                raise
            logger.warning("OIDC certificates not refreshed; using the cached ones", exc_info=True)
            self._expires = now + min(DEFAULT_MAX_AGE, 60)
            return
        self._certs = fetched.certs
        self._expires = now + fetched.max_age


_caches: dict[str, CertCache] = {}
_caches_lock = threading.Lock()


def cert_cache(url: str) -> CertCache:
    with _caches_lock:
        if url not in _caches:
            _caches[url] = CertCache(url)
        return _caches[url]


def forget_certs() -> None:
    """Drop every cached certificate (tests; a key compromise)."""
    with _caches_lock:
        _caches.clear()


def verify_push_token(authorization: str | None) -> dict[str, Any]:
    """The claims of the push's `Authorization: Bearer` token, or PushRefused/PushForbidden.
    Raises CertsUnavailable when nothing can be verified now."""
    audience = settings.GMAIL_PUSH_AUDIENCE
    service_account = settings.GMAIL_PUSH_SERVICE_ACCOUNT
    if not audience or not service_account:
        raise PushForbidden("The push endpoint is not configured.")
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise PushRefused("A Bearer token is required.")
    try:
        header = jwt.decode_header(token)
    except TOKEN_ERRORS as exc:
        raise PushRefused("The token is malformed.") from exc
    if not isinstance(header, dict) or header.get("alg") != ALGORITHM:
        raise PushRefused("The token is not signed with RS256.")
    certs = cert_cache(settings.GMAIL_OIDC_CERTS_URL).certs_for(header.get("kid"))
    try:
        claims = jwt.decode(token, certs=certs, clock_skew_in_seconds=CLOCK_SKEW_SECONDS)
    except TOKEN_ERRORS as exc:
        raise PushRefused(f"The token is not valid: {_reason(exc)}") from exc
    if claims.get("iss") not in ISSUERS:
        raise PushRefused("The token was not issued by Google.")
    if claims.get("aud") != audience:
        raise PushForbidden("The token is for another audience.")
    if claims.get("email") != service_account or claims.get("email_verified") is not True:
        raise PushForbidden("The token is not the push subscription's service account.")
    return dict(claims)


def _reason(exc: Exception) -> str:
    text = str(exc)
    if "expired" in text:
        return "expired"
    if "signature" in text or "Certificate for key id" in text:
        return "bad signature"
    if "too early" in text:
        return "issued in the future"
    return "malformed"
