"""A per-process pool of logged-in IMAP sessions: a burst of syncs of one account logs in once.

    with default_pool().connection(server) as conn: ...   (or `pooled_connection(server)`)

- Sessions are keyed by a fingerprint of everything that makes them (host, port, security,
  username, secret, guard policy): changed settings or credentials never reuse an old session,
  and the old ones of the same server account are closed at the next checkout.
- Bounded: at most `max_total` sessions open per process and `max_per_account` per server
  account (host, port, username), idle or in use. A checkout that finds no room closes the
  least recently used idle session of another account, or waits for one to come back (up to
  `checkout_timeout`), then raises ImapPoolExhausted (an ImapConnectError: retried later).
- One holder at a time: a checked-out session is out of the pool until it is returned.
- Checkout health-checks an idle session with NOOP; one that broke while idle is closed and
  replaced, never handed out. It also asks the outbound guard (emailplatform.netguard) again,
  as a new connection would: the host is resolved afresh under the current policy, and a
  session whose address is no longer among the checked ones is closed, and a new connection
  meets the guard's verdict (DNS rebinding, an address taken off the allow list).
- A session is returned to the pool only when its `with` body raised nothing and none of its
  commands failed (`ImapConnection.failed`); it leaves its folder first (UNSELECT), so a reused
  session is in the state of a fresh one, CONDSTORE/QRESYNC still enabled (once per session).
- Expiry: idle longer than `idle_seconds`, or logged in longer than `max_age_seconds` (so a
  password changed on the server is proved again). Both lazily, at checkout (an expired session
  is never handed out), and by a reaper thread that runs while sessions are idle, so that a
  quiet worker does not hold sessions the server counts against the account's connection limit
  (Gmail allows 15) until the server logs them out.
- Forked children (Celery's prefork pool) start with an empty pool: the parent's sockets are
  never shared.

Network I/O (login, NOOP, UNSELECT, LOGOUT) happens outside the pool's lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from .imap import ImapConnectError, ImapConnection, ImapServer

logger = logging.getLogger(__name__)

CHECK_TIMEOUT_SECONDS = 10.0
REAP_INTERVAL_BOUNDS = (1.0, 60.0)

Identity = tuple[str, int, str]


class ImapPoolExhausted(ImapConnectError):
    """No session could be had within the checkout timeout: every slot is in use."""


def account_identity(host: str, port: int, username: str) -> Identity:
    """The server account a session belongs to (what the per-account cap counts)."""
    return (host.strip().lower().rstrip("."), int(port), username)


def server_identity(server: ImapServer) -> Identity:
    return account_identity(server.host, server.port, server.username)


def server_fingerprint(server: ImapServer) -> str:
    """A digest of every field of SERVER, secrets included: equal only for the same settings
    and credentials. The pool keeps this, never the secrets, as its key."""
    parts = (
        server.host,
        server.port,
        server.security,
        server.username,
        server.password,
        server.oauth2_token,
        server.timeout,
        server.allow_internal,
    )
    return hashlib.sha256(repr(parts).encode()).hexdigest()


@dataclass
class PoolStats:
    logins: int = 0  # sessions opened (each one a login)
    reused: int = 0  # checkouts served by an idle session
    replaced: int = 0  # idle sessions found broken at checkout (closed, a new one opened)
    discarded: int = 0  # returned after an error, or whose credentials changed
    expired: int = 0  # closed for idling or age
    evicted: int = 0  # closed to make room for another account's session


@dataclass(eq=False)
class _Entry:
    conn: ImapConnection
    key: str
    identity: Identity
    created: float
    last_used: float = 0.0
    doomed: bool = False  # close instead of pooling when it comes back


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    idle: list[_Entry] = field(default_factory=list)  # oldest first
    leased: dict[int, _Entry] = field(default_factory=dict)  # id(conn) -> entry
    per_account: dict[Identity, int] = field(default_factory=dict)
    total: int = 0
    reaper: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)


class ImapPool:
    """Logged-in ImapConnections for reuse; see the module's docstring. MAX_TOTAL 0 turns
    pooling off: every checkout logs in, every return logs out, with no cap."""

    def __init__(
        self,
        *,
        max_total: int = 20,
        max_per_account: int = 2,
        idle_seconds: float = 300.0,
        max_age_seconds: float = 1800.0,
        checkout_timeout: float = 30.0,
        check_timeout: float = CHECK_TIMEOUT_SECONDS,
        factory: Callable[[ImapServer], ImapConnection] = ImapConnection,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_total = max_total
        self.max_per_account = max(1, max_per_account)
        self.idle_seconds = idle_seconds
        self.max_age_seconds = max_age_seconds
        self.checkout_timeout = checkout_timeout
        self.check_timeout = check_timeout
        self.factory = factory
        self.clock = clock
        self.stats = PoolStats()
        self._state = _State()
        self._pid = os.getpid()

    @property
    def enabled(self) -> bool:
        return self.max_total > 0

    # Use ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def connection(self, server: ImapServer) -> Iterator[ImapConnection]:
        """A logged-in session for SERVER, returned to the pool after the block unless the
        block raised or one of its commands failed."""
        conn = self.checkout(server)
        try:
            yield conn
        except BaseException:
            self.checkin(conn, reusable=False)
            raise
        self.checkin(conn, reusable=True)

    def checkout(self, server: ImapServer) -> ImapConnection:
        if not self.enabled:
            return self._login(server)
        key, identity = server_fingerprint(server), server_identity(server)
        entry = self._take_or_reserve(key, identity)
        if entry is not None:
            try:
                entry.conn.ping(self.check_timeout)
                if entry.conn.guard_allows_peer():
                    return entry.conn
                self._count("discarded")  # a new connection meets the guard's verdict
            except Exception as exc:
                logger.info("pooled IMAP session to %s broke while idle: %s", server.host, exc)
                self._count("replaced")
            except BaseException:
                self.checkin(entry.conn, reusable=False)
                raise
            self._close(entry.conn)
            with self._state.lock:  # its slot is kept for the new session
                del self._state.leased[id(entry.conn)]
        try:
            conn = self._login(server)
        except BaseException:
            self._release_slot(identity)
            raise
        now = self.clock()
        with self._state.lock:
            self._state.leased[id(conn)] = _Entry(conn, key, identity, created=now)
        return conn

    def checkin(self, conn: ImapConnection, *, reusable: bool) -> None:
        if not self.enabled:
            self._close(conn)
            return
        state = self._state
        with state.lock:
            entry = state.leased.get(id(conn))
        if entry is None:  # not ours (a checkout before a fork or a clear): just close it
            self._close(conn)
            return
        now = self.clock()
        too_old = now - entry.created >= self.max_age_seconds
        reusable = reusable and not too_old and not entry.doomed
        reusable = reusable and not conn.failed and conn.client is not None
        if reusable:
            try:
                conn.unselect()
            except Exception:
                reusable = False
        if not reusable:
            self._count("expired" if too_old else "discarded")
            self._close(conn)
            with state.lock:
                state.leased.pop(id(conn), None)
            self._release_slot(entry.identity)
            return
        with state.lock:
            state.leased.pop(id(conn), None)
            if entry.doomed:  # discarded while we unselected
                doomed = True
            else:
                doomed = False
                entry.last_used = now
                state.idle.append(entry)
                state.changed.notify_all()
                self._ensure_reaper()
        if doomed:
            self._count("discarded")
            self._close(conn)
            self._release_slot(entry.identity)

    # Housekeeping -------------------------------------------------------------------------
    def reap(self) -> int:
        """Close the idle sessions past their idle time or age; how many were closed."""
        now = self.clock()
        with self._state.lock:
            expired = [e for e in self._state.idle if self._expired(e, now)]
            self._drop_idle(expired)
            self.stats.expired += len(expired)
        for entry in expired:
            self._close(entry.conn)
        return len(expired)

    def discard_account(self, identity: Identity) -> int:
        """Close the idle sessions of a server account, and those in use when they come back
        (its credentials changed, it was deleted or parked)."""
        with self._state.lock:
            gone = [e for e in self._state.idle if e.identity == identity]
            self._drop_idle(gone)
            for entry in self._state.leased.values():
                if entry.identity == identity:
                    entry.doomed = True
            self.stats.discarded += len(gone)
        for entry in gone:
            self._close(entry.conn)
        return len(gone)

    def clear(self) -> None:
        """Close every idle session; those in use are closed when they come back."""
        with self._state.lock:
            gone = list(self._state.idle)
            self._drop_idle(gone)
            for entry in self._state.leased.values():
                entry.doomed = True
        for entry in gone:
            self._close(entry.conn)

    def counts(self) -> tuple[int, int]:
        """(sessions open, of which idle)."""
        with self._state.lock:
            return self._state.total, len(self._state.idle)

    def after_fork(self) -> None:
        """In a forked child: forget the parent's sessions (their sockets are the parent's)."""
        self._state = _State()
        self._pid = os.getpid()

    # Internals ----------------------------------------------------------------------------
    def _take_or_reserve(self, key: str, identity: Identity) -> _Entry | None:
        """An idle session for KEY (leased to the caller), or None with a slot reserved for a
        new one. Waits for room up to the checkout timeout."""
        if os.getpid() != self._pid:
            self.after_fork()
        state = self._state
        deadline = self.clock() + self.checkout_timeout
        while True:
            to_close: list[_Entry] = []
            entry = None
            with state.lock:
                now = self.clock()
                for stale in [e for e in state.idle if self._expired(e, now)]:
                    self.stats.expired += 1
                    to_close.append(stale)
                for stale in [e for e in state.idle if e.identity == identity and e.key != key]:
                    if stale not in to_close:
                        self.stats.discarded += 1  # the account's settings or secret changed
                        to_close.append(stale)
                self._drop_idle(to_close)
                mine = [e for e in state.idle if e.key == key]
                if mine:
                    entry = mine[-1]  # the most recently used: the others may expire
                    state.idle.remove(entry)
                    state.leased[id(entry.conn)] = entry
                    self.stats.reused += 1
                    reserved = True
                else:
                    reserved = self._reserve(identity, to_close)
            for stale in to_close:
                self._close(stale.conn)
            if reserved:
                return entry
            remaining = deadline - self.clock()
            if remaining <= 0:
                break
            with state.lock:
                state.changed.wait(min(remaining, 1.0))
        raise ImapPoolExhausted(
            f"no IMAP session free for {identity[2]} at {identity[0]} within"
            f" {self.checkout_timeout:g} s (pool limits: {self.max_total} in all,"
            f" {self.max_per_account} per account)"
        )

    def _reserve(self, identity: Identity, to_close: list[_Entry]) -> bool:
        """Count a new session of IDENTITY in (lock held), evicting another account's least
        recently used idle session when only the total cap is in the way."""
        state = self._state
        if state.per_account.get(identity, 0) >= self.max_per_account:
            return False
        if state.total >= self.max_total:
            others = [e for e in state.idle if e.identity != identity]
            if not others:
                return False
            victim = others[0]
            self._drop_idle([victim])
            to_close.append(victim)
            self.stats.evicted += 1
        state.total += 1
        state.per_account[identity] = state.per_account.get(identity, 0) + 1
        return True

    def _drop_idle(self, entries: list[_Entry]) -> None:
        """Take ENTRIES out of the idle list and the counts (lock held)."""
        state = self._state
        for entry in entries:
            state.idle.remove(entry)
            self._uncount(entry.identity)
        if entries:
            state.changed.notify_all()

    def _release_slot(self, identity: Identity) -> None:
        with self._state.lock:
            self._uncount(identity)
            self._state.changed.notify_all()

    def _uncount(self, identity: Identity) -> None:
        state = self._state
        state.total -= 1
        left = state.per_account.get(identity, 0) - 1
        if left > 0:
            state.per_account[identity] = left
        else:
            state.per_account.pop(identity, None)

    def _expired(self, entry: _Entry, now: float) -> bool:
        return (
            now - entry.last_used >= self.idle_seconds
            or now - entry.created >= self.max_age_seconds
        )

    def _login(self, server: ImapServer) -> ImapConnection:
        conn = self.factory(server)
        conn.connect()
        self._count("logins")
        return conn

    def _count(self, stat: str) -> None:
        with self._state.lock:
            setattr(self.stats, stat, getattr(self.stats, stat) + 1)

    @staticmethod
    def _close(conn: ImapConnection) -> None:
        try:
            conn.close()
        except Exception:  # a connection that is already gone
            logger.debug("closing a pooled IMAP session failed", exc_info=True)

    def _ensure_reaper(self) -> None:
        """Start the reaper thread if none runs in this process (lock held)."""
        state = self._state
        if state.reaper is not None and state.reaper.is_alive():
            return
        state.reaper = threading.Thread(
            target=self._reap_while_idle, args=(state,), name="imap-pool-reaper", daemon=True
        )
        state.reaper.start()

    def _reap_while_idle(self, state: _State) -> None:
        low, high = REAP_INTERVAL_BOUNDS
        interval = min(high, max(low, min(self.idle_seconds, self.max_age_seconds) / 4))
        while True:
            time.sleep(interval)
            if state is not self._state:  # forked or replaced
                return
            try:
                self.reap()
            except Exception:
                logger.exception("reaping the IMAP pool failed")
            with state.lock:
                if not state.idle:
                    state.reaper = None
                    return


_default: ImapPool | None = None
_default_lock = threading.Lock()


def default_pool() -> ImapPool:
    """The process's pool, configured by the IMAP_POOL_* settings."""
    global _default
    with _default_lock:
        if _default is None:
            _default = ImapPool(
                max_total=settings.IMAP_POOL_MAX_CONNECTIONS,
                max_per_account=settings.IMAP_POOL_MAX_PER_ACCOUNT,
                idle_seconds=settings.IMAP_POOL_IDLE_SECONDS,
                max_age_seconds=settings.IMAP_POOL_MAX_AGE_SECONDS,
                checkout_timeout=settings.IMAP_POOL_CHECKOUT_TIMEOUT_SECONDS,
            )
        return _default


def default_pool_reset() -> None:
    """Close the default pool's idle sessions and make the next use read the settings again."""
    global _default
    with _default_lock:
        pool, _default = _default, None
    if pool is not None:
        pool.clear()


def pooled_connection(server: ImapServer) -> contextlib.AbstractContextManager[ImapConnection]:
    """A `connection_factory` for the sync services: `with pooled_connection(server) as conn`."""
    return default_pool().connection(server)


def _after_fork_in_child() -> None:
    if _default is not None:
        _default.after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def imap_settings_deleted(sender: object, instance: Any, **kwargs: object) -> None:
    """post_delete of an account's ImapSettings (the account is being deleted): this process's
    sessions of it are closed. Other processes' sessions expire unused."""
    if _default is not None:
        _default.discard_account(
            account_identity(instance.imap_host, instance.imap_port, instance.username)
        )
