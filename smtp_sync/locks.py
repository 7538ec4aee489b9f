"""One sync per account at a time: a Redis lock with an expiry, extended while work goes on.

A trigger that finds the lock taken leaves a "pending" mark instead of waiting; the holder
runs one more pass when it sees the mark, so concurrent triggers coalesce into one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import redis
from django.conf import settings
from redis.lock import Lock


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def client() -> redis.Redis:
    return _client(settings.CELERY_BROKER_URL)


def _lock_key(account_id: int) -> str:
    return f"emailplatform:sync-lock:{account_id}"


def _pending_key(account_id: int) -> str:
    return f"emailplatform:sync-pending:{account_id}"


class SyncLockLost(Exception):
    """The lock expired during a long step and another sync holds it now."""


class SyncLock:
    def __init__(self, lock: Lock, account_id: int) -> None:
        self.lock = lock
        self.account_id = account_id

    def extend(self) -> None:
        """Reset the expiry: call between batches of long work.

        If a batch outlived the expiry, take the lock again; if another sync took it meanwhile,
        raise SyncLockLost so that this one stops rather than race it."""
        try:
            self.lock.reacquire()
        except redis.exceptions.LockNotOwnedError:
            if not self.lock.acquire(blocking=False):
                raise SyncLockLost(f"account {self.account_id}: another sync took over") from None

    def take_pending(self) -> bool:
        """True once for every trigger that arrived while the lock was held."""
        return bool(client().getdel(_pending_key(self.account_id)))


@contextmanager
def account_sync_lock(account_id: int) -> Iterator[SyncLock | None]:
    """Yield the held lock, or None (after marking a pending pass) when another sync runs."""
    ttl = settings.SYNC_LOCK_TTL_SECONDS
    lock = client().lock(_lock_key(account_id), timeout=ttl, blocking=False)
    if not lock.acquire(blocking=False):
        client().set(_pending_key(account_id), 1, ex=ttl * 4)
        yield None
        return
    try:
        yield SyncLock(lock, account_id)
    finally:
        # It may have expired while we worked; the next sync then takes it anew.
        with contextlib.suppress(redis.exceptions.LockError):
            lock.release()
