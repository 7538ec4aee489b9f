"""One process, thousands of IDLE mailboxes: an asyncio listener (`manage.py imap_idle`).

Each held mailbox is one task and one connection (smtp_sync.idle_client), nothing else: no
thread, no database connection. The account list is read in one query per refresh (every
REFRESH_SECONDS, and at once after a nudge from smtp_sync.idle_nudge) in a worker thread that
closes its database connection afterwards; triggers (a Redis round trip) run in the same small
thread pool, so the process uses at most POOL_THREADS database connections, and none while it
waits.

Reconnect storms are damped three ways: every (re)connect waits for a token of its server's
bucket (CONNECT_RATE per second per host and port), a broken mailbox waits a jittered,
growing delay first, and a server that answers [UNAVAILABLE], [LIMIT], [INUSE] or BYE pauses
every connect to that server for a growing while (the mailboxes it holds stay held).

Where the server has NOTIFY (RFC 5465; Dovecot does) one connection watches every personal
folder; elsewhere INBOX by IDLE and the other folders by the periodic poll.

Several listeners (processes, hosts) share the account list through a Membership
(smtp_sync.idle_leases): each holds only its rendezvous share of the list, and a member's
arrival or death, seen at a heartbeat, re-assigns at once from the list last read (no
database read).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import redis
from django.db import DatabaseError, close_old_connections, connection
from django.db.models.functions import Mod

from emailplatform.observability import metrics
from messages.account_status import account_mark_error
from messages.models import Account

from .idle import BACKOFF_MAX_SECONDS, IDLE_RENEW_SECONDS, NUDGE_MIN_SECONDS, REFRESH_SECONDS
from .idle_client import IdleSession, ImapBye, bound_tls_buffers
from .idle_leases import Membership
from .idle_nudge import NudgeListener
from .imap import ImapAuthError, ImapError, ImapLoginDeferred, ImapRefusedError, ImapServer
from .sync import server_for

logger = logging.getLogger(__name__)

POOL_THREADS = 3  # README "Database connections": a listener counts for 3
CONNECT_RATE = 100.0  # connects per second to one server (host, port)
CONNECT_BURST = 20
CONNECTS_IN_FLIGHT = 200  # logins under way at once, over all servers
RECONNECT_JITTER_SECONDS = 10.0  # a broken session waits up to this long before its first retry
SERVER_PAUSE_MAX_SECONDS = 300.0
DEFERRING_CODES = frozenset({"UNAVAILABLE", "LIMIT", "INUSE", "SERVERBUG"})


class ServerGate:
    """The connect rate limit and the pause of one server (host, port)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()
        self.paused_until = 0.0
        self.pauses = 0  # refusals in a row; a good login resets it
        self._lock = asyncio.Lock()

    async def admit(self) -> None:
        """Wait for a connect slot: after any pause, at RATE per second."""
        async with self._lock:  # first come, first served
            while True:
                now = time.monotonic()
                if now < self.paused_until:
                    await asyncio.sleep(self.paused_until - now)
                    continue
                self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await asyncio.sleep((1 - self.tokens) / self.rate)

    def refused(self) -> float:
        """The server refused for now: pause every connect to it; the pause in seconds. The
        refusals heard while paused (every session of a restarting server says BYE) count once."""
        now = time.monotonic()
        if now < self.paused_until:
            return self.paused_until - now
        self.pauses += 1
        pause = min(SERVER_PAUSE_MAX_SECONDS, 2 ** min(self.pauses, 9)) * random.uniform(0.5, 1)
        self.paused_until = max(self.paused_until, time.monotonic() + pause)
        self.tokens = 0
        return pause

    def accepted(self) -> None:
        self.pauses = 0


@dataclass
class Stats:
    held: int = 0
    connecting: int = 0
    waiting: int = 0
    notify: int = 0
    connects: int = 0
    failures: int = 0
    triggers: int = 0
    refusals: int = 0
    wanted: int = 0
    refreshes: int = 0
    members: int = 1
    last_refresh: float = 0.0
    pid: int = field(default_factory=os.getpid)


class Mailbox:
    """The task holding one account's IDLE."""

    def __init__(self, listener: AsyncIdleListener, account_id: int, server: ImapServer) -> None:
        self.listener = listener
        self.account_id = account_id
        self.server = server
        self.failures = 0
        self.held_once = False
        self.state = "new"
        self.task = asyncio.create_task(self._run(), name=f"idle-{account_id}")

    def _set(self, state: str) -> None:
        stats = self.listener.stats
        if self.state in ("held", "connecting", "waiting"):
            setattr(stats, self.state, getattr(stats, self.state) - 1)
        if state in ("held", "connecting", "waiting"):
            setattr(stats, state, getattr(stats, state) + 1)
        self.state = state

    def stop(self) -> None:
        self.task.cancel()

    async def _run(self) -> None:
        listener = self.listener
        try:
            while True:
                try:
                    await self._hold()
                except asyncio.CancelledError:
                    raise
                except ImapAuthError as exc:
                    if await listener.mark_auth_error(self.account_id, str(exc)):
                        logger.warning("IDLE for account %s stopped: %s", self.account_id, exc)
                        self._set("stopped")
                        return
                    await self._back_off(exc)
                except ImapRefusedError as exc:
                    logger.warning("IDLE for account %s refused: %s", self.account_id, exc)
                    await self._back_off(exc, at_least=BACKOFF_MAX_SECONDS)
                except (ImapError, OSError, TimeoutError) as exc:
                    await self._back_off(exc)
                except Exception as exc:
                    logger.exception("IDLE for account %s failed", self.account_id)
                    await self._back_off(exc)
        finally:
            self._set("stopped")

    async def _hold(self) -> None:
        listener = self.listener
        gate = listener.gate(self.server)
        self._set("waiting")
        await gate.admit()
        self._set("connecting")
        session = IdleSession(self.server)
        try:
            async with listener.in_flight:
                listener.stats.connects += 1
                try:
                    await session.open()
                    await session.watch(notify=listener.notify)
                except (ImapLoginDeferred, ImapBye) as exc:
                    listener.server_refused(gate, self.server, exc)
                    raise
            gate.accepted()
            self.failures = 0
            self._set("held")
            listener.stats.notify += session.notify
            try:
                # Catch up on what happened before IDLE was held (or while it was broken).
                listener.trigger(self.account_id)
                self.held_once = True
                await session.idle(
                    lambda: listener.trigger(self.account_id),
                    renew_seconds=listener.renew_seconds,
                )
            except ImapBye as exc:
                # A held session's BYE (a server shutting down or cutting idlers) pauses the
                # server only when it says to come back later; else the jitter spreads retries.
                if exc.code in DEFERRING_CODES:
                    listener.server_refused(gate, self.server, exc)
                raise
            finally:
                listener.stats.notify -= session.notify
        finally:
            await session.close()

    async def _back_off(self, exc: BaseException, *, at_least: float = 0.0) -> None:
        self.failures += 1
        self.listener.stats.failures += 1
        self._set("backoff")
        if self.failures == 1:  # the first retry of a storm is spread over the jitter window
            delay = random.uniform(0, self.listener.reconnect_jitter)
        else:
            delay = min(BACKOFF_MAX_SECONDS, 2 ** min(self.failures, 9)) * random.uniform(0.5, 1)
        delay = max(delay, at_least)
        logger.info(
            "IDLE for account %s broke (%s); reconnecting in %.1fs", self.account_id, exc, delay
        )
        await asyncio.sleep(delay)


class AsyncIdleListener:
    """Holds IDLE for every IDLE-capable active IMAP account of this shard."""

    def __init__(
        self,
        trigger: Callable[[int], None],
        *,
        shard: int = 0,
        shards: int = 1,
        connect_rate: float = CONNECT_RATE,
        connect_burst: int = CONNECT_BURST,
        reconnect_jitter: float = RECONNECT_JITTER_SECONDS,
        renew_seconds: float = IDLE_RENEW_SECONDS,
        notify: bool = True,
        accounts: Callable[[], dict[int, ImapServer]] | None = None,
        membership: Membership | None = None,
    ) -> None:
        """ACCOUNTS: what to hold, {account id: server}, read in a pool thread at each
        refresh; by default `wanted_servers` (the database). MEMBERSHIP: hold only this
        listener's share of them (None: all of them)."""
        self._trigger = trigger
        self._accounts = accounts or self.wanted_servers
        self.shard = shard
        self.shards = shards
        self.connect_rate = connect_rate
        self.connect_burst = connect_burst
        self.reconnect_jitter = reconnect_jitter
        self.renew_seconds = renew_seconds
        self.notify = notify
        self.membership = membership
        self.mailboxes: dict[int, Mailbox] = {}
        self._listed: dict[int, ImapServer] | None = None  # the last account list read
        # Heartbeats have a thread of their own: a slow database read never delays one.
        self._beats = ThreadPoolExecutor(1, thread_name_prefix="idle-beat")
        self.stats = Stats()
        self._gates: dict[tuple[str, int], ServerGate] = {}
        self._pool = ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="idle-db")
        self._triggering: set[int] = set()
        self._again: set[int] = set()
        self.in_flight = asyncio.Semaphore(CONNECTS_IN_FLIGHT)  # bound to a loop at first use

    def gate(self, server: ImapServer) -> ServerGate:
        key = (server.host.lower(), server.port)
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = ServerGate(self.connect_rate, self.connect_burst)
        return gate

    def server_refused(self, gate: ServerGate, server: ImapServer, exc: ImapError) -> None:
        self.stats.refusals += 1
        pause = gate.refused()
        logger.info("%s:%s: %s; its connects pause %.1f s", server.host, server.port, exc, pause)

    # The account list --------------------------------------------------------------------
    def wanted_servers(self) -> dict[int, ImapServer]:
        """Every account to hold, read in one query (run in a pool thread; it closes its
        database connection before returning)."""
        try:
            close_old_connections()
            accounts = Account.objects.filter(
                provider=Account.Provider.IMAP, status=Account.Status.ACTIVE
            ).select_related("imap_settings")
            if self.shards > 1:
                accounts = accounts.annotate(shard=Mod("id", self.shards)).filter(shard=self.shard)
            wanted = {}
            for account in accounts.iterator(chunk_size=2000):
                settings = account.imap_settings
                if "IDLE" not in (settings.capabilities or []):
                    continue
                wanted[account.pk] = server_for(account, settings)
            return wanted
        finally:
            connection.close()

    async def refresh(self) -> None:
        loop = asyncio.get_running_loop()
        self._listed = await loop.run_in_executor(self._pool, self._accounts)
        self.hold(await self._share(self._listed))
        await loop.run_in_executor(self._pool, metrics.idle_connections_report, self.stats.held)
        self.stats.refreshes += 1
        self.stats.last_refresh = time.time()

    async def _share(self, listed: dict[int, ImapServer]) -> dict[int, ImapServer]:
        """This listener's share of LISTED; computed in the heartbeat thread (10,000 accounts
        among 5 listeners: about 0.4 s of hashing, which would stall the loop)."""
        if self.membership is None:
            return listed
        loop = asyncio.get_running_loop()
        mine = await loop.run_in_executor(self._beats, self.membership.mine, listed)
        return {account_id: listed[account_id] for account_id in mine}

    def hold(self, wanted: dict[int, ImapServer]) -> None:
        """Hold exactly WANTED: new accounts are started, gone ones let go, and one whose
        server settings (or credentials) changed is started again."""
        for account_id in list(self.mailboxes):
            mailbox = self.mailboxes[account_id]
            if wanted.get(account_id) != mailbox.server or mailbox.task.done():
                self.mailboxes.pop(account_id).stop()
        for account_id, server in wanted.items():
            if account_id not in self.mailboxes:
                self.mailboxes[account_id] = Mailbox(self, account_id, server)
        self.stats.wanted = len(wanted)

    # Work in the pool --------------------------------------------------------------------
    def trigger(self, account_id: int) -> None:
        """Ask for a sync of ACCOUNT_ID in the pool; a notice while one is under way for the
        same account runs it once more after, not once per notice."""
        self.stats.triggers += 1
        if account_id in self._triggering:
            self._again.add(account_id)
            return
        self._triggering.add(account_id)
        future = asyncio.get_running_loop().run_in_executor(
            self._pool, self._run_trigger, account_id
        )
        future.add_done_callback(lambda f: self._triggered(account_id, f))

    def _run_trigger(self, account_id: int) -> None:
        try:
            self._trigger(account_id)
        finally:
            connection.close()

    def _triggered(self, account_id: int, future: asyncio.Future) -> None:
        self._triggering.discard(account_id)
        if future.exception() is not None:
            logger.warning("IDLE trigger for account %s failed: %s", account_id, future.exception())
        if account_id in self._again:
            self._again.discard(account_id)
            if account_id in self.mailboxes:
                self.trigger(account_id)

    async def mark_auth_error(self, account_id: int, message: str) -> bool:
        """Record a refused login; False when the database could not be told (retry then)."""

        def mark() -> bool:
            try:
                close_old_connections()
                account = Account.objects.filter(pk=account_id).first()
                if account is not None:
                    account_mark_error(account, message, auth=True)
                return True
            except DatabaseError:
                logger.warning("IDLE for account %s: cannot record its auth error", account_id)
                return False
            finally:
                connection.close()

        return await asyncio.get_running_loop().run_in_executor(self._pool, mark)

    # The loop ----------------------------------------------------------------------------
    async def run(
        self,
        stopping: asyncio.Event,
        *,
        refresh_seconds: float = REFRESH_SECONDS,
        heartbeat: Path | None = None,
        stats_file: Path | None = None,
    ) -> None:
        """Refresh every REFRESH_SECONDS and soon after a nudge, until STOPPING is set; a failed
        refresh is retried sooner, the held mailboxes stay held meanwhile."""
        loop = asyncio.get_running_loop()
        bound_tls_buffers()
        wake = asyncio.Event()
        nudges = NudgeListener(_LoopEvent(loop, wake))  # type: ignore[arg-type]
        nudges.start()
        writer = (
            asyncio.create_task(self._write_stats(stats_file, stopping)) if stats_file else None
        )
        beating = None
        failures = 0
        try:
            if self.membership is not None:
                await self.heartbeat()  # know the other members before the first refresh
                beating = asyncio.create_task(self._heartbeats(stopping))
            while not stopping.is_set():
                wake.clear()
                try:
                    await self.refresh()
                    failures = 0
                    if heartbeat is not None:
                        heartbeat.touch()
                except Exception as exc:
                    failures += 1
                    log = logger.warning if isinstance(exc, DatabaseError) else logger.exception
                    log("IDLE refresh failed (%s): %s; the held mailboxes stay held", failures, exc)
                delay = refresh_seconds
                if failures:
                    delay = min(refresh_seconds, 2 ** min(failures - 1, 9)) * random.uniform(0.5, 1)
                await _wait(stopping, wake, delay)
        finally:
            nudges.stop()
            for task in (writer, beating):
                if task is not None:
                    task.cancel()
            await self.stop()

    async def stop(self) -> None:
        mailboxes = list(self.mailboxes.values())
        self.mailboxes.clear()
        for mailbox in mailboxes:
            mailbox.stop()
        if mailboxes:
            await asyncio.gather(*(m.task for m in mailboxes), return_exceptions=True)
        if self.membership is not None:
            await self._leave()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._beats.shutdown(wait=False, cancel_futures=True)

    # Membership --------------------------------------------------------------------------
    async def heartbeat(self) -> None:
        """Renew this listener's membership; when the members changed, hold the new share of
        the account list last read. Redis away: what is held stays held."""
        membership = self.membership
        try:
            changed = await asyncio.get_running_loop().run_in_executor(self._beats, membership.beat)
        except (redis.RedisError, OSError) as exc:
            logger.warning("IDLE membership heartbeat failed (%s); holding what is held", exc)
            return
        self.stats.members = len(membership.members)
        if changed:
            logger.info("IDLE listeners now %s", len(membership.members))
            if self._listed is not None:
                self.hold(await self._share(self._listed))

    async def _heartbeats(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            await _first(stopping, self.membership.heartbeat_seconds)
            if stopping.is_set():
                return
            try:
                await self.heartbeat()
            except Exception:  # a heartbeat task that died would let the lease lapse under us
                logger.exception("IDLE membership heartbeat failed")

    async def _leave(self) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(self._beats, self.membership.leave)
        except (redis.RedisError, OSError) as exc:
            logger.info("IDLE membership not removed (%s): it lapses by itself", exc)

    async def _write_stats(self, path: Path, stopping: asyncio.Event) -> None:
        """The counters as JSON in PATH every second (for a health check or a benchmark)."""
        while not stopping.is_set():
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.stats.__dict__))
            tmp.replace(path)
            await asyncio.sleep(1.0)


class _LoopEvent:
    """Sets an asyncio event from another thread (the Redis nudge thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        self.loop = loop
        self.event = event

    def set(self) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.event.set)


async def _wait(stopping: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    """Until SECONDS pass, STOPPING is set or a nudge comes (at most one refresh per
    NUDGE_MIN_SECONDS however many nudges arrive)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    await _first(stopping, min(NUDGE_MIN_SECONDS, seconds))
    while not stopping.is_set() and (left := deadline - loop.time()) > 0:
        if wake.is_set():
            return
        await _first(stopping, min(left, 1.0), wake)


async def _first(stopping: asyncio.Event, timeout: float, *others: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(e.wait()) for e in (stopping, *others)]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
