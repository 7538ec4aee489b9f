"""Per-account sync coordination in Redis: the lock, the pending requests, the queued markers.

Every sync trigger (API "sync now", admin, beat, IDLE, the watchdog, a chunk that has more to
do) is a *request* for a kind of pass; the state of one account is:

- ``sync-want:<id>``: a hash ``{kind: first request time}`` of what is owed, one entry per kind
  at most: ``full`` (a full pass), ``incremental``, ``continue`` (the rest of a full pass that
  paused at its checkpoint; run as an incremental pass, which reconciles every folder not yet
  complete, but queued on the full-sync queue). Any number of triggers is one entry.
- ``sync-lock:<id>``: the one sync of the account that runs (a token with a short expiry, kept
  alive by a heartbeat thread; see ``emailplatform.synclock``).
- ``sync-queued:<id>:<route>``: a task is on the queue for this route (``full``: the
  EmailFullSync queue, for ``full`` and ``continue``; ``incremental``: the provider's queue).
  It has an expiry (``QUEUED_TTL``): a marker whose task a dead worker swallowed frees itself.

The rules, each one atomic (a Lua script), so that no trigger is lost between two of them:

- ``request``: record the want; if a sync holds the lock, that is all (the holder takes the
  want before it releases the lock, so it runs once more at the end); otherwise enqueue a task
  unless one is already queued for that route. 50 requests while one task waits: one task.
- the holder ``take``s every want before each pass (a full want makes it a full pass), and
  ``release`` returns what was requested meanwhile, which the holder publishes again.
- a task runs only the wants it finds: a duplicate task, or a stale one Redis re-delivers
  after its visibility timeout, finds nothing owed and ends at once (no redundant sync).

What Redis forgets (a restart without persistence) the watchdog (``smtp_sync.watchdog``)
recovers from the database and the ``sync-epoch`` sentinel.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from functools import lru_cache

import redis
from django.conf import settings

FULL = "full"
INCREMENTAL = "incremental"
CONTINUE = "continue"
KINDS = (FULL, CONTINUE, INCREMENTAL)  # strongest first

ROUTE_FULL = "full"
ROUTE_INCREMENTAL = "incremental"

# A queued marker outlives its task by at most this long (a task swallowed by a dead worker
# blocks new tasks of its route no longer than this; then the watchdog enqueues again).
QUEUED_TTL = 90
# A want nobody takes is dropped after a day (an account deleted meanwhile, ...).
WANT_TTL = 24 * 60 * 60

PREFIX = "emailplatform"


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)


def client() -> redis.Redis:
    return _client(settings.CELERY_BROKER_URL)


def lock_key(account_id: int) -> str:
    return f"{PREFIX}:sync-lock:{account_id}"


def want_key(account_id: int) -> str:
    return f"{PREFIX}:sync-want:{account_id}"


def queued_key(account_id: int, route: str) -> str:
    return f"{PREFIX}:sync-queued:{account_id}:{route}"


WANT_INDEX = f"{PREFIX}:sync-wanting"
EPOCH_KEY = f"{PREFIX}:sync-epoch"


def route_of(kind: str) -> str:
    return ROUTE_INCREMENTAL if kind == INCREMENTAL else ROUTE_FULL


def strongest(kinds: Iterable[str]) -> str | None:
    kinds = set(kinds)
    return next((kind for kind in KINDS if kind in kinds), None)


def new_token() -> str:
    return uuid.uuid4().hex


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# KEYS: want, index, lock, queued. ARGV: kind, now, account id, token, queued ttl.
# Returns 0: a sync runs (it will take the want), 1: enqueue a task now, 2: one is queued.
_REQUEST = """
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
redis.call('SADD', KEYS[2], ARGV[3])
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
if redis.call('SET', KEYS[4], ARGV[4], 'NX', 'EX', tonumber(ARGV[5])) then return 1 end
return 2
"""

# KEYS: want, index. ARGV: account id. Takes (returns and deletes) every want.
_TAKE = """
local wants = redis.call('HKEYS', KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return wants
"""

# KEYS: lock, want. ARGV: token. Releases the lock if ours; returns the wants left.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return redis.call('HKEYS', KEYS[2])
"""

# KEYS: lock. ARGV: token, ttl ms. 1: extended, 2: it had expired and is ours again, 0: lost.
_EXTEND = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not holder then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 2 end
return 0
"""

# KEYS: key. ARGV: value. Deletes the key if it holds the value.
_DELETE_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _script(source: str):
    return client().register_script(source)


REQUEST_RUNNING, REQUEST_ENQUEUE, REQUEST_QUEUED = 0, 1, 2


def request(account_id: int, kind: str, token: str) -> int:
    """Record a request; REQUEST_ENQUEUE when the caller must now enqueue a task with TOKEN."""
    keys = [
        want_key(account_id),
        WANT_INDEX,
        lock_key(account_id),
        queued_key(account_id, route_of(kind)),
    ]
    args = [kind, int(time.time()), account_id, token, QUEUED_TTL, WANT_TTL]
    return int(_script(_REQUEST)(keys=keys, args=args))


def wants(account_id: int) -> set[str]:
    return {_text(k) for k in client().hkeys(want_key(account_id))}


def want(account_id: int, *kinds: str) -> None:
    """Record wants without enqueueing anything (the caller holds the lock, or will take it)."""
    if not kinds:
        return
    pipe = client().pipeline()
    for kind in kinds:
        pipe.hsetnx(want_key(account_id), kind, int(time.time()))
    pipe.expire(want_key(account_id), WANT_TTL)
    pipe.sadd(WANT_INDEX, account_id)
    pipe.execute()


def take(account_id: int) -> set[str]:
    keys = [want_key(account_id), WANT_INDEX]
    return {_text(k) for k in _script(_TAKE)(keys=keys, args=[account_id])}


def wanting_accounts() -> list[int]:
    return sorted(int(_text(m)) for m in client().smembers(WANT_INDEX))


def forget_account(account_id: int) -> None:
    pipe = client().pipeline()
    pipe.delete(want_key(account_id))
    pipe.srem(WANT_INDEX, account_id)
    pipe.execute()


def queued_set(account_id: int, route: str, token: str, ttl: int) -> None:
    client().set(queued_key(account_id, route), token, ex=max(1, int(ttl)))


def queued_clear(account_id: int, route: str, token: str) -> None:
    _script(_DELETE_IF)(keys=[queued_key(account_id, route)], args=[token])


def queued_exists(account_id: int, route: str) -> bool:
    return bool(client().exists(queued_key(account_id, route)))


def lock_acquire(account_id: int, token: str, ttl: float) -> bool:
    return bool(client().set(lock_key(account_id), token, nx=True, px=int(ttl * 1000)))


def lock_extend(account_id: int, token: str, ttl: float) -> int:
    return int(_script(_EXTEND)(keys=[lock_key(account_id)], args=[token, int(ttl * 1000)]))


def lock_release(account_id: int, token: str) -> set[str]:
    keys = [lock_key(account_id), want_key(account_id)]
    return {_text(k) for k in _script(_RELEASE)(keys=keys, args=[token])}


def locks_held(account_ids: Iterable[int]) -> dict[int, bool]:
    ids = list(account_ids)
    if not ids:
        return {}
    values = client().mget([lock_key(a) for a in ids])
    return {a: v is not None for a, v in zip(ids, values, strict=True)}


def epoch_is_new() -> bool:
    """True once after Redis started empty (first start, or a restart that lost its data)."""
    return bool(client().set(EPOCH_KEY, int(time.time()), nx=True))
