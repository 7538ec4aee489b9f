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
import uuid
from functools import lru_cache
from typing import Any

import redis
from axes.helpers import get_cool_off
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework import exceptions, throttling

LOCKOUT_MESSAGE = "Too many failed login attempts: try again later."


def _rate(scope: str) -> str | None:
    # Read on every request, so a test (or an override) that changes the settings applies.
    return settings.REST_FRAMEWORK.get("DEFAULT_THROTTLE_RATES", {}).get(scope)


# DRF's throttles read the whole request history (up to the rate: 1,200 timestamps) from the
# cache and write it back on every request. Here it is a sorted set that Redis trims, counts
# and appends to in one round trip: the same sliding window, whatever the rate.
_SLIDING_LOG = """
local now, duration, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local cost = tonumber(ARGV[5] or '1')
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - duration)
local count = redis.call('ZCARD', KEYS[1])
if cost > limit then
    return ARGV[1]
end
if count + cost <= limit then
    for i = 1, cost do
        redis.call('ZADD', KEYS[1], now, ARGV[4] .. ':' .. i)
    end
    redis.call('EXPIRE', KEYS[1], math.ceil(duration))
    return false
end
local frees = count + cost - limit - 1
return redis.call('ZRANGE', KEYS[1], frees, frees, 'WITHSCORES')[2]
"""


@lru_cache(maxsize=4)
def _sliding_log(location: str) -> Any:
    first = location.split(",")[0] if isinstance(location, str) else location[0]
    return redis.Redis.from_url(first, socket_timeout=2).register_script(_SLIDING_LOG)


class _RateFromSettings:
    """The rate from settings, counted in a sliding window of the allowed requests."""

    scope: str
    cache: Any
    num_requests: int
    duration: int
    timer: Any

    def get_rate(self) -> str | None:
        return _rate(self.scope)

    def allow_request(self, request: Any, view: Any, cost: int = 1) -> bool:
        """COST requests at once: all of them fit in the window, or none counts. A cost above
        the rate never fits (the wait is a whole window)."""
        if self.rate is None:  # type: ignore[attr-defined]
            return True
        key = self.get_cache_key(request, view)  # type: ignore[attr-defined]
        if key is None:
            return True
        self.now = self.timer()
        script = _sliding_log(settings.CACHES["default"]["LOCATION"])
        member = f"{self.now!r}:{uuid.uuid4().hex[:8]}"
        oldest = script(
            keys=[self.cache.make_key(key)],
            args=[repr(self.now), self.duration, self.num_requests, member, cost],
        )
        self.oldest = None if oldest is None else float(oldest)
        return oldest is None

    def wait(self) -> float | None:
        if self.oldest is None:
            return None
        return max(self.oldest + self.duration - self.now, 0.0)


class AnonThrottle(_RateFromSettings, throttling.AnonRateThrottle):
    """Anonymous requests (the token endpoint, the schema), per client address."""


class UserThrottle(_RateFromSettings, throttling.UserRateThrottle):
    """Every authenticated request, per user."""


class ScopedUserThrottle(_RateFromSettings, throttling.UserRateThrottle):
    """A stricter budget for one kind of request, per user, on top of UserThrottle.

    Only requests that cost something count: POSTs, or what the view's `throttle_applies`
    says; reads stay free. A view's `throttle_cost(request)` counts one request as several
    (a batch of N messages as N sends).
    """

    def allow_request(self, request: Any, view: Any, cost: int = 1) -> bool:
        applies = getattr(view, "throttle_applies", None)
        counts = applies(request) if applies else request.method == "POST"
        if not counts:
            return True
        cost_of = getattr(view, "throttle_cost", None)
        return super().allow_request(request, view, cost_of(request) if cost_of else cost)


def scoped(name: str) -> type[ScopedUserThrottle]:
    """A throttle class whose budget is THROTTLE_RATES[name]."""
    return type(f"{name.title().replace('_', '')}Throttle", (ScopedUserThrottle,), {"scope": name})


AccountCreateThrottle = scoped("account_create")
TestConnectionThrottle = scoped("test_connection")
SyncThrottle = scoped("sync")
SendThrottle = scoped("send")


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
