"""Request throttles of the API and the lockout answer of login brute force.

Counters live in the default cache (Redis, shared by every web process). Rates are settings
(THROTTLE_RATES, from the environment); a refused request is a 429 in the API's error shape
with Retry-After.

Login brute force (django-axes, see AXES_* in settings): a (username, client address) pair is
refused after AXES_FAILURE_LIMIT wrong passwords, until the cool-off has passed without a new
attempt. The token endpoint reports it itself (DRF's request is not the one axes' middleware
sees); the admin login gets `lockout_response` through AXES_LOCKOUT_CALLABLE.
"""

from __future__ import annotations

import math
from typing import Any

from axes.helpers import get_cool_off
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework import exceptions, throttling

LOCKOUT_MESSAGE = "Too many failed login attempts: try again later."


def _rate(scope: str) -> str | None:
    # Read on every request, so a test (or an override) that changes the settings applies.
    return settings.REST_FRAMEWORK.get("DEFAULT_THROTTLE_RATES", {}).get(scope)


class _RateFromSettings:
    scope: str

    def get_rate(self) -> str | None:
        return _rate(self.scope)


class AnonThrottle(_RateFromSettings, throttling.AnonRateThrottle):
    """Anonymous requests (the token endpoint, the schema), per client address."""


class UserThrottle(_RateFromSettings, throttling.UserRateThrottle):
    """Every authenticated request, per user."""


class ScopedUserThrottle(_RateFromSettings, throttling.UserRateThrottle):
    """A stricter budget for one kind of request, per user, on top of UserThrottle.

    Only requests that cost something count: POSTs, or what the view's `throttle_applies`
    says; reads stay free.
    """

    def allow_request(self, request: Any, view: Any) -> bool:
        applies = getattr(view, "throttle_applies", None)
        counts = applies(request) if applies else request.method == "POST"
        if not counts:
            return True
        return super().allow_request(request, view)


def scoped(name: str) -> type[ScopedUserThrottle]:
    """A throttle class whose budget is THROTTLE_RATES[name]."""
    return type(f"{name.title().replace('_', '')}Throttle", (ScopedUserThrottle,), {"scope": name})


AccountCreateThrottle = scoped("account_create")
TestConnectionThrottle = scoped("test_connection")
SyncThrottle = scoped("sync")


class LoginLockedOut(exceptions.Throttled):
    default_detail = LOCKOUT_MESSAGE
    default_code = "locked_out"


def lockout_seconds(request: HttpRequest | None = None) -> int:
    cool_off = get_cool_off(request)
    return max(1, math.ceil(cool_off.total_seconds())) if cool_off else 24 * 3600


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: Any = None
) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: 429 with Retry-After (JSON in the error shape under /api/)."""
    from .errors import API_PREFIX, error_body

    seconds = lockout_seconds(request)
    if request.path.startswith(API_PREFIX):
        response: HttpResponse = JsonResponse(error_body("locked_out", LOCKOUT_MESSAGE), status=429)
    else:
        response = HttpResponse(
            f"<!doctype html><title>Too many attempts</title><h1>Too many failed login "
            f"attempts</h1><p>Try again in {math.ceil(seconds / 60)} minutes.</p>",
            status=429,
        )
    response["Retry-After"] = str(seconds)
    return response
