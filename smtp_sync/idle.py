"""IMAP IDLE listeners: near-realtime triggers for incremental syncs.

One thread per account holds an IDLE on the INBOX, reconnects with backoff when the connection
breaks, and re-issues IDLE well before the server's 29-minute limit (RFC 2177). Any EXISTS,
EXPUNGE or FETCH it hears asks for an incremental sync through `trigger(account_id)`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from django.db import close_old_connections, connection

from messages.models import Account

from .imap import ImapAuthError, ImapConnection, ImapError
from .sync import account_mark_error, server_for

logger = logging.getLogger(__name__)

IDLE_RENEW_SECONDS = 25 * 60
IDLE_CHECK_SECONDS = 30
BACKOFF_MAX_SECONDS = 300
CHANGE_RESPONSES = (b"EXISTS", b"EXPUNGE", b"FETCH", b"VANISHED")


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
                account = Account.objects.filter(pk=self.account_id).first()
                if account is not None:
                    account_mark_error(account, str(exc), auth=True)
                logger.warning("IDLE for account %s stopped: %s", self.account_id, exc)
                return
            except (ImapError, OSError) as exc:
                self.failures += 1
                delay = min(BACKOFF_MAX_SECONDS, 2 ** min(self.failures, 9)) * random.uniform(
                    0.5, 1.0
                )
                logger.info(
                    "IDLE for account %s broke (%s); reconnecting in %.0fs",
                    self.account_id,
                    exc,
                    delay,
                )
                self.stopping.wait(delay)
            finally:
                close_old_connections()

    def _watch(self) -> None:
        account = Account.objects.get(pk=self.account_id)
        with self.connection_factory(server_for(account)) as conn:
            conn.select(self.folder, readonly=True)
            self.trigger(self.account_id)  # catch up on what happened while we were away
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
                    self.trigger(self.account_id)


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

    def stop(self) -> None:
        for watcher in self.watchers.values():
            watcher.stop()
        for watcher in self.watchers.values():
            watcher.join(timeout=IDLE_CHECK_SECONDS + 5)
        self.watchers.clear()
