"""Per-account sending limits (per minute, per day), shared by every worker through Redis.

Each window is a sliding log (a sorted set of send times, Redis's own clock) per account. A
send takes a slot in every window at once, or none: `take` answers how long until a slot frees
when a window is full, and the caller makes the message wait that long (it is not dropped, and
the wait is no attempt). A slot taken for a message another worker claimed first is given back
(`give_back`).

Limits come from the account's sync_settings (`sendPerMinute`, `sendPerDay`), else the
settings OUTBOUND_SEND_PER_MINUTE / OUTBOUND_SEND_PER_DAY; 0 means no limit.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from django.conf import settings

from emailplatform import syncstate

from .models import Account

MINUTE_SECONDS = 60.0
DAY_SECONDS = 24 * 60 * 60.0

# KEYS: one sorted set per window. ARGV: how many slots, a member prefix, then (limit, window
# in ms) per key. Takes slots (members "prefix:1", "prefix:2", ...) while every window has
# room; returns {slots taken, ms until the next one frees in all windows (0: none was full)}.
_SLIDING_LOG = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local count, prefix = tonumber(ARGV[1]), ARGV[2]
for i = 1, #KEYS do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - tonumber(ARGV[2 * i + 2]))
end
local taken, wait = 0, 0
while taken < count do
    for i = 1, #KEYS do
        local limit, window = tonumber(ARGV[2 * i + 1]), tonumber(ARGV[2 * i + 2])
        if limit > 0 then
            local used = redis.call('ZCARD', KEYS[i])
            if used >= limit then
                local oldest = used - limit
                local frees = redis.call('ZRANGE', KEYS[i], oldest, oldest, 'WITHSCORES')
                wait = math.max(wait, tonumber(frees[2]) + window - now, 1)
            end
        end
    end
    if wait > 0 then
        break
    end
    taken = taken + 1
    for i = 1, #KEYS do
        if tonumber(ARGV[2 * i + 1]) > 0 then
            redis.call('ZADD', KEYS[i], now, prefix .. ':' .. taken)
            redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[2 * i + 2]))
        end
    end
end
return {taken, wait}
"""


@lru_cache(maxsize=4)
def _script(url: str) -> Any:
    return syncstate.client().register_script(_SLIDING_LOG)


@dataclass(frozen=True)
class SendLimits:
    per_minute: int
    per_day: int

    @classmethod
    def of(cls, account: Account) -> SendLimits:
        stored = account.sync_settings if isinstance(account.sync_settings, dict) else {}
        minute = stored.get("sendPerMinute", settings.OUTBOUND_SEND_PER_MINUTE)
        day = stored.get("sendPerDay", settings.OUTBOUND_SEND_PER_DAY)
        return cls(per_minute=max(0, int(minute or 0)), per_day=max(0, int(day or 0)))


@dataclass(frozen=True)
class Slot:
    """A slot taken (MEMBER: its entry in the logs, "" when no limit applies), or the seconds
    until one frees (WAIT > 0)."""

    member: str = ""
    wait: float = 0.0


def _keys(account_id: int) -> list[str]:
    base = f"{syncstate.PREFIX}:send-limit:{account_id}"
    return [f"{base}:minute", f"{base}:day"]


def send_slot_take(account: Account, limits: SendLimits | None = None) -> Slot:
    """Take a sending slot of ACCOUNT in both windows, or say how long to wait for one."""
    slots, wait = send_slots_take(account, 1, limits)
    return slots[0] if slots else Slot(wait=wait)


def send_slots_take(
    account: Account, count: int, limits: SendLimits | None = None
) -> tuple[list[Slot], float]:
    """Up to COUNT slots of ACCOUNT at once (one round trip, for a burst): the slots taken,
    and the seconds until the next one frees when fewer were (else 0)."""
    limits = limits or SendLimits.of(account)
    if not limits.per_minute and not limits.per_day:
        return [Slot() for _ in range(count)], 0.0
    prefix = uuid.uuid4().hex
    args = [
        count,
        prefix,
        limits.per_minute,
        int(MINUTE_SECONDS * 1000),
        limits.per_day,
        int(DAY_SECONDS * 1000),
    ]
    taken, wait_ms = _script(settings.CELERY_BROKER_URL)(keys=_keys(account.pk), args=args)
    slots = [Slot(member=f"{prefix}:{n}") for n in range(1, int(taken) + 1)]
    return slots, int(wait_ms) / 1000


def send_slot_give_back(account: Account, *slots: Slot) -> None:
    """Give back slots taken for sends that did not happen."""
    members = [slot.member for slot in slots if slot.member]
    if members:
        client = syncstate.client()
        for key in _keys(account.pk):
            client.zrem(key, *members)
