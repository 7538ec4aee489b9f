"""IMAP IDLE listeners: near-realtime triggers for incremental syncs.

One thread per account holds an IDLE on the INBOX, reconnects with backoff when the connection
breaks, and re-issues IDLE well before the server's 29-minute limit (RFC 2177). Any EXISTS,
EXPUNGE or FETCH it hears asks for an incremental sync through `trigger(account_id)`.

Nothing here holds a database connection while it waits (DESIGN: a deployment's connection count
is a formula of its process counts): a watcher reads its account, closes the connection, then
idles; the supervisor closes its connection after each refresh. A database or broker that goes
away and comes back costs a retry with backoff, never the process nor an IDLE session.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

from django.core.exceptions import ObjectDoesNotExist
from django.db import DatabaseError, close_old_connections, connection

from emailplatform.observability import metrics
from messages.account_status import account_mark_error
from messages.models import Account

from .idle_nudge import NudgeListener
from .imap import ImapAuthError, ImapConnection, ImapError
from .sync import server_for

logger = logging.getLogger(__name__)

IDLE_RENEW_SECONDS = 25 * 60
IDLE_CHECK_SECONDS = 30
BACKOFF_MAX_SECONDS = 300
REFRESH_SECONDS = 60
NUDGE_MIN_SECONDS = 1.0
CHANGE_RESPONSES = (b"EXISTS", b"EXPUNGE", b"FETCH", b"VANISHED")
# Watchers that may hold a database connection at once (reading their account, triggering):
# with the supervisor's, a listener holds at most IDLE_DB_CONNECTIONS + 1 however many accounts
# reconnect or hear mail together (README, "Database connections").
IDLE_DB_CONNECTIONS = 2
_db_slots = threading.BoundedSemaphore(IDLE_DB_CONNECTIONS)


class IdleWatcher(threading.Thread):
    """Holds IDLE for one account until stopped."""

    def __init__(
        self,
        account_id: int,
        trigger: Callable[[int], None],
        *,
        folder: str = "INBOX",
        connection_factory: Callable = ImapConnection,
    ) -> None:
        super().__init__(name=f"idle-{account_id}", daemon=True)
        self.account_id = account_id
        self.trigger = trigger
        self.folder = folder
        self.connection_factory = connection_factory
        self.stopping = threading.Event()
        self.failures = 0
        self.connected = False  # holds an IDLE session now (reported to the metrics)

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        try:
            self._run()
        finally:
            connection.close()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                self._watch()
                self.failures = 0
            except ImapAuthError as exc:
                if self._mark_auth_error(str(exc)):
                    logger.warning("IDLE for account %s stopped: %s", self.account_id, exc)
                    return
                self._back_off(exc)
            except ObjectDoesNotExist:  # the account went; the supervisor drops it next refresh
                return
            except (ImapError, OSError, DatabaseError) as exc:
                self._back_off(exc)
            except Exception as exc:  # e.g. the broker is away when a change is heard
                logger.exception("IDLE for account %s failed", self.account_id)
                self._back_off(exc)
            finally:
                self.connected = False
                close_old_connections()
                connection.close()

    def _mark_auth_error(self, message: str) -> bool:
        """Record the refused login; False when the database could not be told (retry then)."""
        with _db_slots:
            try:
                account = Account.objects.filter(pk=self.account_id).first()
                if account is not None:
                    account_mark_error(account, message, auth=True)
            except DatabaseError:
                logger.warning("IDLE for account %s: cannot record its auth error", self.account_id)
                return False
            finally:
                connection.close()
        return True

    def _back_off(self, exc: BaseException) -> None:
        self.failures += 1
        delay = min(BACKOFF_MAX_SECONDS, 2 ** min(self.failures, 9)) * random.uniform(0.5, 1.0)
        logger.info(
            "IDLE for account %s broke (%s); reconnecting in %.0fs", self.account_id, exc, delay
        )
        self.stopping.wait(delay)

    def _watch(self) -> None:
        with _db_slots:
            try:
                close_old_connections()
                server = server_for(Account.objects.get(pk=self.account_id))
            finally:
                connection.close()  # no database connection held through IDLE
        with self.connection_factory(server) as conn:
            conn.select(self.folder, readonly=True)
            self._trigger()  # catch up on what happened while we were away
            self.connected = True
            while not self.stopping.is_set():
                conn.imap.idle()
                renew_at = time.monotonic() + IDLE_RENEW_SECONDS
                changed = False
                try:
                    while not self.stopping.is_set() and time.monotonic() < renew_at:
                        responses = conn.imap.idle_check(timeout=IDLE_CHECK_SECONDS)
                        if any(_is_change(r) for r in responses):
                            changed = True
                            break
                finally:
                    conn.imap.idle_done()
                if changed:
                    self._trigger()

    def _trigger(self) -> None:
        with _db_slots:
            try:
                self.trigger(self.account_id)
            finally:
                connection.close()


def _is_change(response: tuple) -> bool:
    return any(isinstance(part, bytes) and part.upper() in CHANGE_RESPONSES for part in response)


class IdleSupervisor:
    """Keeps one watcher per IDLE-capable active IMAP account of this shard."""

    def __init__(
        self,
        trigger: Callable[[int], None],
        *,
        shard: int = 0,
        shards: int = 1,
        connection_factory: Callable = ImapConnection,
    ) -> None:
        self.trigger = trigger
        self.shard = shard
        self.shards = shards
        self.connection_factory = connection_factory
        self.watchers: dict[int, IdleWatcher] = {}

    def wanted_accounts(self) -> set[int]:
        ids = Account.objects.filter(
            provider=Account.Provider.IMAP, status=Account.Status.ACTIVE
        ).values_list("id", "imap_settings__capabilities")
        return {
            account_id
            for account_id, capabilities in ids
            if account_id % self.shards == self.shard and "IDLE" in (capabilities or [])
        }

    def refresh(self) -> None:
        wanted = self.wanted_accounts()
        for account_id in set(self.watchers) - wanted:
            self.watchers.pop(account_id).stop()
        for account_id in wanted:
            watcher = self.watchers.get(account_id)
            if watcher is None or not watcher.is_alive():
                watcher = IdleWatcher(
                    account_id, self.trigger, connection_factory=self.connection_factory
                )
                self.watchers[account_id] = watcher
                watcher.start()

    def run(
        self,
        stopping: threading.Event,
        *,
        refresh_seconds: float = REFRESH_SECONDS,
        heartbeat: Path | None = None,
    ) -> None:
        """Refresh the watchers every REFRESH_SECONDS, and soon after a nudge
        (smtp_sync.idle_nudge), until STOPPING is set.

        A refresh that fails (the database restarting, a connection it closed) is logged and
        retried sooner, with backoff up to the refresh interval; the running watchers keep their
        IDLE sessions meanwhile. HEARTBEAT, when given, is touched after each good refresh: the
        container health check reads its age."""
        failures = 0
        wake = threading.Event()
        nudges = NudgeListener(wake)
        nudges.start()
        try:
            while not stopping.is_set():
                wake.clear()  # a nudge from now on asks for the next refresh
                failures = self._refresh_once(failures, heartbeat)
                if failures:
                    delay = min(refresh_seconds, 2 ** min(failures - 1, 9))
                    delay *= random.uniform(0.5, 1.0)
                else:
                    delay = refresh_seconds
                _wait(stopping, wake, delay)
        finally:
            nudges.stop()

    def _refresh_once(self, failures: int, heartbeat: Path | None) -> int:
        """One refresh; the count of refreshes failed in a row after it."""
        try:
            close_old_connections()  # a kept connection the server closed is not reused
            self.refresh()
            metrics.idle_connections_report(sum(w.connected for w in self.watchers.values()))
            if heartbeat is not None:
                heartbeat.touch()
            return 0
        except Exception as exc:
            log = logger.warning if isinstance(exc, DatabaseError) else logger.exception
            log("IDLE refresh failed (%s): %s; the watchers keep running", failures + 1, exc)
            return failures + 1
        finally:
            connection.close()  # none held while waiting

    def stop(self) -> None:
        for watcher in self.watchers.values():
            watcher.stop()
        for watcher in self.watchers.values():
            watcher.join(timeout=IDLE_CHECK_SECONDS + 5)
        self.watchers.clear()


def _wait(stopping: threading.Event, wake: threading.Event, seconds: float) -> None:
    """Until SECONDS pass, STOPPING is set, or a nudge (WAKE) comes: at most one refresh per
    NUDGE_MIN_SECONDS however many nudges arrive."""
    deadline = time.monotonic() + seconds
    stopping.wait(min(NUDGE_MIN_SECONDS, seconds))
    while not stopping.is_set() and (left := deadline - time.monotonic()) > 0:
        if wake.wait(min(left, 1.0)):
            return
