"""One sync per account at a time: a Redis lock with a short expiry, kept alive by a heartbeat.

The lock (`emailplatform.syncstate`) expires after SYNC_LOCK_TTL_SECONDS (30 s); a heartbeat
thread extends it every TTL/6 while the sync runs, however long one batch takes, so a worker
killed with kill -9 frees its accounts within the TTL, and a live one never loses its lock to a
slow batch. If Redis forgot the lock (a restart) the heartbeat takes it again when nobody else
has; if another sync has it, the heartbeat marks it lost and the sync stops at its next
checkpoint (`SyncLock.extend` raises SyncLockLost).

Requests that arrive while the lock is held stay in the account's wants; the holder takes them
before each pass, and `release` hands back those that came after its last pass, which the
holder publishes again (`topics.sync_request_now`): nothing is lost between "the holder looked"
and "the lock was released".
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import kombu.exceptions
import redis
from django.conf import settings

from emailplatform import syncstate, topics

logger = logging.getLogger(__name__)


class SyncLockLost(Exception):
    """Another sync holds the lock now (ours expired unnoticed, e.g. Redis lost it)."""


class SyncLock:
    def __init__(self, account_id: int, token: str, ttl: float) -> None:
        self.account_id = account_id
        self.token = token
        self.ttl = ttl
        self.lost = threading.Event()
        self.republish = True  # publish, at the release, what was requested meanwhile
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._heartbeat, name=f"sync-lock-{account_id}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _heartbeat(self) -> None:
        interval = max(0.2, self.ttl / 6)
        while not self._stop.wait(interval):
            try:
                if syncstate.lock_extend(self.account_id, self.token, self.ttl) == 0:
                    logger.warning("account %s: another sync took the lock", self.account_id)
                    self.lost.set()
                    return
            except redis.RedisError as exc:  # Redis restarting: try again at the next beat
                logger.warning("account %s: lock heartbeat failed: %s", self.account_id, exc)

    def extend(self) -> None:
        """Called between batches: raise SyncLockLost if another sync took over."""
        if self.lost.is_set():
            raise SyncLockLost(f"account {self.account_id}: another sync took over")

    def take_wants(self) -> set[str]:
        """Every pass requested so far (emptied: the pass about to run covers them)."""
        return syncstate.take(self.account_id)

    def want(self, *kinds: str) -> None:
        syncstate.want(self.account_id, *kinds)


@contextmanager
def account_sync_lock(account_id: int, provider: str = "imap") -> Iterator[SyncLock | None]:
    """Yield the held lock, or None when another sync runs (it takes the wants at its end).

    On the way out the lock is released and what was requested meanwhile is published again.
    """
    ttl = settings.SYNC_LOCK_TTL_SECONDS
    token = syncstate.new_token()
    if not syncstate.lock_acquire(account_id, token, ttl):
        yield None
        return
    lock = SyncLock(account_id, token, ttl)
    lock.start()
    try:
        yield lock
    finally:
        lock.stop()
        try:
            left = syncstate.lock_release(account_id, token)
            kind = syncstate.strongest(left)
            if kind is not None and lock.republish:
                topics.sync_request_now(account_id, provider, kind=kind)
        except (redis.RedisError, kombu.exceptions.OperationalError) as exc:
            # The lock expires by itself; the wants left are enqueued by the watchdog.
            logger.warning("account %s: lock release failed: %s", account_id, exc)
