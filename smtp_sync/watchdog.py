"""The sync watchdog: nothing owed to an account waits for the poll or the visibility timeout.

Every `SYNC_WATCHDOG_SECONDS` (15 s) one tick runs, across all workers (`watchdog_tick`):

1. Runs marked running whose account's lock is gone are over (their worker died, or a database
   outage kept them from being marked). A run is reaped once its lock has been seen missing for
   SUSPECT_SECONDS (two lock heartbeats: a lock Redis forgot in a restart is taken again by its
   live holder's heartbeat within TTL/6), marked interrupted, and its work requested again:
   the rest of a full pass ("continue", on the full-sync queue), else an incremental pass.
2. Requests nobody runs (an account with wants, no lock, and no task queued for them: the task
   was swallowed by a dead worker, or its queued marker expired) are enqueued again, once
   their queue holds no message waiting (`_queue_has_messages`).
3. After Redis started empty (a restart without persistence lost its queues and wants), an
   incremental sync of every active account is requested once (the `sync-epoch` sentinel).
4. Parked (auth_error) IMAP accounts whose login re-test is due get an `auth_retest` task
   (a Gmail grant refused stays parked until its owner connects it again).

Steps 1-3 cover every provider whose syncs coalesce (`topics.SYNC_COALESCING_PROVIDERS`:
IMAP and Gmail); the watchdog runs in every worker that loads smtp_sync's tasks.

Why a thread in the workers rather than a beat entry: the watchdog is needed exactly when
something died, and beat is one more process that may be down (or stuck on a database that
restarted); every worker has one, a Redis key elects the one that ticks, and a worker that
starts after a crash ticks within seconds. Nothing runs if no worker runs, but then no sync
could either. A kill -9 of a worker's sync is resumed within about a minute: the lock expires
after SYNC_LOCK_TTL_SECONDS (30 s), the next tick sees it missing, the one after reaps it.

The tick holds no database connection between ticks.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import signals
from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone
from kombu.exceptions import ChannelError

from emailplatform import syncstate, topics
from messages.account_status import auth_retest_delay
from messages.models import Account, SyncRun
from messages.services import sync_runs_interrupt

logger = logging.getLogger(__name__)

SUSPECT_SECONDS = 10
AUTH_RETESTS_PER_TICK = 100
LEADER_KEY = f"{syncstate.PREFIX}:sync-watchdog"
SYNC_KINDS = [SyncRun.Kind.FULL, SyncRun.Kind.INCREMENTAL]


def _suspect_key(run_id: int) -> str:
    return f"{syncstate.PREFIX}:sync-suspect:{run_id}"


def watchdog_tick() -> dict[str, Any]:
    """One round of the watchdog (see the module's docstring); returns what it did."""
    done: dict[str, Any] = {"catch_up": 0}
    if syncstate.epoch_is_new():
        done["catch_up"] = _request_all_active()
    done["reaped"] = _reap_dead_runs()
    done["requeued"] = _enqueue_orphan_wants()
    done["auth_retests"] = _queue_auth_retests()
    if any(done.values()):
        logger.info("sync watchdog: %s", done)
    return done


def _request_all_active() -> int:
    accounts = Account.objects.filter(
        provider__in=topics.SYNC_COALESCING_PROVIDERS, status=Account.Status.ACTIVE
    ).values_list("id", "provider")
    count = 0
    for account_id, provider in accounts:
        topics.sync_request_now(account_id, provider, kind=syncstate.INCREMENTAL)
        count += 1
    return count


def _reap_dead_runs() -> list[int]:
    runs = list(
        SyncRun.objects.filter(
            status=SyncRun.Status.RUNNING,
            kind__in=SYNC_KINDS,
            account__provider__in=topics.SYNC_COALESCING_PROVIDERS,
        ).values_list("id", "account_id")
    )
    if not runs:
        return []
    held = syncstate.locks_held({account_id for _, account_id in runs})
    redis = syncstate.client()
    now = time.time()
    dead = []
    for run_id, account_id in runs:
        key = _suspect_key(run_id)
        if held[account_id]:
            redis.delete(key)
            continue
        redis.set(key, now, nx=True, ex=10 * 60)
        first_seen = float(redis.get(key) or now)
        if now - first_seen >= SUSPECT_SECONDS:
            dead.append(run_id)
    if not dead:
        return []
    reaped = sync_runs_interrupt(run_ids=dead, kinds=SYNC_KINDS)
    active = dict(
        Account.objects.filter(
            pk__in={run.account_id for run in reaped},
            status__in=[Account.Status.ACTIVE, Account.Status.ERROR],
        ).values_list("id", "provider")
    )
    for run in reaped:
        redis.delete(_suspect_key(run.pk))
        if run.account_id in active:
            kind = syncstate.CONTINUE if run.kind == SyncRun.Kind.FULL else syncstate.INCREMENTAL
            topics.sync_request_now(run.account_id, active[run.account_id], kind=kind)
        logger.warning(
            "sync watchdog: %s sync run %s of account %s had no lock: interrupted, resumed",
            run.kind,
            run.pk,
            run.account_id,
        )
    return [run.pk for run in reaped]


def _enqueue_orphan_wants() -> list[int]:
    wanting = syncstate.wanting_accounts()
    if not wanting:
        return []
    accounts = dict(
        Account.objects.filter(
            pk__in=wanting, status__in=[Account.Status.ACTIVE, Account.Status.ERROR]
        ).values_list("id", "provider")
    )
    held = syncstate.locks_held(wanting)
    waiting: dict[str, bool] = {}
    enqueued = []
    for account_id in wanting:
        provider = accounts.get(account_id)
        if provider not in topics.SYNC_COALESCING_PROVIDERS:
            syncstate.forget_account(account_id)  # deleted, parked, or not ours to sync
            continue
        if held[account_id]:
            continue  # the holder takes them
        kind = syncstate.strongest(syncstate.wants(account_id))
        if kind is None:
            syncstate.forget_account(account_id)
            continue
        queue = topics.QUEUE_FULL_SYNC if kind != syncstate.INCREMENTAL else None
        queue = queue or topics.PROVIDER_QUEUES[provider]
        if queue not in waiting:
            waiting[queue] = _queue_has_messages(queue)
        if waiting[queue]:
            continue  # its task is most likely still waiting its turn: see below
        if topics.sync_request_now(account_id, provider, kind=kind):
            enqueued.append(account_id)
    return enqueued


def _queue_has_messages(queue: str) -> bool:
    """Whether QUEUE holds messages not yet taken by a worker.

    A queued marker lives QUEUED_TTL (90 s); in a burst (the beat job's full syncs of a
    thousand accounts) tasks wait in their queue longer than that, and re-enqueueing each one
    whose marker expired put a copy of it behind the others every 90 s, again and again: the
    queue grew with the square of the burst. While the queue holds messages a re-enqueued task
    would not run before those anyway; once it is empty a want left is truly orphaned (and a
    message a dead worker swallowed comes back by the visibility timeout meanwhile)."""
    from emailplatform.celery import app

    with app.connection_for_read() as conn:
        try:
            return conn.default_channel.queue_declare(queue=queue, passive=True).message_count > 0
        except ChannelError:  # no such queue: nothing in it
            return False


def _queue_auth_retests() -> list[int]:
    now = timezone.now()
    due = list(
        Account.objects.filter(
            provider=Account.Provider.IMAP,
            status=Account.Status.AUTH_ERROR,
            auth_retest_at__lte=now,
        )
        .order_by("auth_retest_at")
        .values_list("id", "auth_retest_at", "auth_failures")[:AUTH_RETESTS_PER_TICK]
    )
    queued = []
    for account_id, retest_at, failures in due:
        # Claim it: the next re-test is due after the next backoff step, whatever happens now.
        claimed = Account.objects.filter(
            pk=account_id, status=Account.Status.AUTH_ERROR, auth_retest_at=retest_at
        ).update(auth_retest_at=now + auth_retest_delay(failures + 1))
        if claimed:
            topics._send("smtp_sync.auth_retest", [account_id], topics.QUEUE_SMTP)
            queued.append(account_id)
    return queued


class Watchdog(threading.Thread):
    """Ticks every INTERVAL seconds when this process wins the tick (a Redis key)."""

    def __init__(self, interval: float) -> None:
        super().__init__(name="sync-watchdog", daemon=True)
        self.interval = interval
        self.stopping = threading.Event()
        self.token = syncstate.new_token()

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        delay = min(2.0, self.interval)  # a worker that (re)starts looks at once
        while not self.stopping.wait(delay):
            delay = self.interval
            try:
                leader = syncstate.client().set(
                    LEADER_KEY, self.token, nx=True, px=int(self.interval * 900)
                )
                if leader:
                    watchdog_tick()
            except Exception:  # the database or Redis is down: the next tick tries again
                logger.exception("sync watchdog tick failed")
            finally:
                close_old_connections()
                connection.close()


_watchdog: Watchdog | None = None


@signals.worker_ready.connect
def _start_watchdog(**_: Any) -> None:
    global _watchdog
    if settings.SYNC_WATCHDOG_SECONDS > 0 and _watchdog is None:
        _watchdog = Watchdog(settings.SYNC_WATCHDOG_SECONDS)
        _watchdog.start()


@signals.worker_shutdown.connect
def _stop_watchdog(**_: Any) -> None:
    if _watchdog is not None:
        _watchdog.stop()
