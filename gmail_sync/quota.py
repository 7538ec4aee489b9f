"""Gmail's per-user quota, shared by every worker of the platform through Redis.

Google allows each mailbox 250 quota units per second across all clients, each method at its
published price (UNITS). A token bucket per mailbox in Redis (capacity: one second's units,
refilled continuously, Redis's own clock so hosts may disagree on the time) is drawn from before
every call; a call that would overdraw it waits for the units instead. A call larger than the
bucket (a batch of 100 gets is 500 units) may run when the bucket is full, leaving a debt that
the next callers wait out. When Google answers 429 or a rate-limit 403 anyway (other clients of
the mailbox spend from the same quota), `penalize` pauses every worker of that mailbox.
"""

from __future__ import annotations

import logging
import time
from functools import lru_cache
from typing import Any

import redis
from django.conf import settings

from emailplatform import syncstate

logger = logging.getLogger(__name__)

# Quota units per method (Gmail API "Usage limits", per-method quota usage).
UNITS: dict[str, int] = {
    "getProfile": 1,
    "labels.list": 1,
    "labels.get": 1,
    "labels.create": 5,
    "history.list": 2,
    "messages.list": 5,
    "messages.get": 5,
    "messages.attachments.get": 5,
    "messages.modify": 5,
    "messages.batchModify": 50,
    "messages.trash": 5,
    "messages.untrash": 5,
    "messages.delete": 10,
    "messages.insert": 25,
    "messages.import": 25,
    "messages.send": 100,
    "watch": 100,
    "stop": 50,
}

# KEYS[1]: the bucket (hash: tokens, ts in ms, until in ms). ARGV: rate per second, capacity,
# units to draw, and a pause in ms to impose (0: none). Returns the ms to wait (0: drawn).
_BUCKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate, cap = tonumber(ARGV[1]), tonumber(ARGV[2])
local units, pause = tonumber(ARGV[3]), tonumber(ARGV[4])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts', 'until')
local tokens = tonumber(b[1]) or cap
local ts = tonumber(b[2]) or now
local paused = tonumber(b[3]) or 0
if pause > 0 then
    paused = math.max(paused, now + pause)
    redis.call('HSET', KEYS[1], 'until', paused)
end
tokens = math.min(cap, tokens + (now - ts) * rate / 1000)
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.max(60000, paused - now + 60000))
if now < paused then
    return paused - now
end
if units > 0 and tokens >= math.min(units, cap) then
    redis.call('HSET', KEYS[1], 'tokens', tokens - units)
    return 0
end
if units == 0 then
    return 0
end
return math.ceil((math.min(units, cap) - tokens) * 1000 / rate)
"""


@lru_cache(maxsize=4)
def _script(url: str) -> Any:
    return redis.Redis.from_url(url, socket_timeout=10).register_script(_BUCKET)


class QuotaLimiter:
    """The quota bucket of one mailbox (key: its email address, as Google counts per user)."""

    def __init__(self, mailbox: str, *, units_per_second: int | None = None) -> None:
        self.key = f"{syncstate.PREFIX}:gmail-quota:{mailbox.lower()}"
        self.rate = max(1, units_per_second or settings.GMAIL_QUOTA_UNITS_PER_SECOND)
        self.waited = 0.0  # seconds this limiter made its caller wait

    def _run(self, units: int, pause_ms: int) -> int:
        try:
            return int(
                _script(settings.CELERY_BROKER_URL)(
                    keys=[self.key], args=[self.rate, self.rate, units, pause_ms]
                )
            )
        except redis.RedisError as exc:
            # Without Redis the platform is down anyway; do not also stop the call here.
            logger.warning("gmail quota bucket unavailable (%s): calling unmetered", exc)
            return 0

    def acquire(self, units: int) -> None:
        """Wait until the mailbox's quota has UNITS, then spend them."""
        while True:
            wait_ms = self._run(units, 0)
            if wait_ms <= 0:
                return
            self.waited += wait_ms / 1000
            time.sleep(wait_ms / 1000)

    def penalize(self, seconds: float) -> None:
        """Pause every caller of this mailbox for SECONDS (Google said slow down)."""
        self._run(0, max(1, int(seconds * 1000)))
