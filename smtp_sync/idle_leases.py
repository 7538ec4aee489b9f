"""Which IDLE listener holds which account, over several processes and hosts.

Each listener is a *member*: an entry in a Redis sorted set scored by its last heartbeat (Redis's
own clock, so the hosts' clocks do not matter). Every HEARTBEAT_SECONDS a member renews its
score, removes the members silent for MEMBER_TTL_SECONDS (dead: killed, host lost) and reads the
live list back, all in one script. An account is held by the live member that ranks first for
it by rendezvous (highest-random-weight) hashing: every member computes the same answer from the
same list, with no per-account key in Redis, and a join or a death moves only the share of the
member that came or went. A graceful stop removes the member at once.

A hand-over leaves at most one heartbeat of overlap or gap: a joining member holds its share from
its first heartbeat, the others let go at their next one (two IDLE sessions on one account for
up to HEARTBEAT_SECONDS: harmless, the syncs they trigger coalesce per account). A dead member's
accounts go unheld until its entry lapses and the survivors' next heartbeat (at most TTL plus a
heartbeat); each newly held mailbox triggers a catch-up sync, so nothing is missed, only later.
While Redis cannot be reached a member keeps what it holds (its triggers need Redis anyway).
"""

from __future__ import annotations

import hashlib
import os
import socket
import uuid
from collections.abc import Iterable

from emailplatform import syncstate

HEARTBEAT_SECONDS = 10.0
MEMBER_TTL_SECONDS = 30.0

# KEYS[1]: the members; ARGV: member, ttl. Returns the live members after renewing ARGV[1].
_BEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[2])))
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 4))
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""


def members_key(group: str) -> str:
    return f"{syncstate.PREFIX}:idle-members:{group}"


def rank(member: str, account_id: int) -> int:
    digest = hashlib.blake2b(f"{member}|{account_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(account_id: int, members: Iterable[str]) -> str:
    """The member that holds ACCOUNT_ID: the one ranking first for it."""
    return max(members, key=lambda member: rank(member, account_id))


class Membership:
    """One listener's entry among the members of GROUP (the listeners sharing one account list,
    e.g. one `--shard`). `beat` and `leave` block on Redis: call them from a thread."""

    def __init__(
        self,
        group: str = "all",
        *,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        ttl_seconds: float = MEMBER_TTL_SECONDS,
    ) -> None:
        self.key = members_key(group)
        self.member = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.heartbeat_seconds = heartbeat_seconds
        self.ttl_seconds = ttl_seconds
        self.members: tuple[str, ...] = (self.member,)  # until the first heartbeat answers

    def beat(self) -> bool:
        """Renew this member and read the live ones; True when the list changed."""
        client = syncstate.client()
        live = client.eval(_BEAT, 1, self.key, self.member, self.ttl_seconds)
        members = tuple(sorted(m.decode() for m in live))
        changed = members != self.members
        self.members = members
        return changed

    def leave(self) -> None:
        syncstate.client().zrem(self.key, self.member)

    def mine(self, account_ids: Iterable[int]) -> set[int]:
        if len(self.members) == 1:
            return set(account_ids) if self.members[0] == self.member else set()
        return {a for a in account_ids if owner(a, self.members) == self.member}
