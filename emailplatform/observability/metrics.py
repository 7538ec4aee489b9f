"""Recording metrics from any process (web, Celery workers, the IDLE listener) into Redis.

Why Redis and not prometheus-client's multiprocess mode: the platform's processes run in
separate containers and hosts (docker-compose.yml: web, two worker kinds, the IDLE listener),
which share no directory for the multiprocess files, and half of what matters is global state
anyway (queue depths, accounts, running syncs) that no single process owns. So counters and
histograms are kept in Redis hashes (one pipelined round trip per event: per task, per stored
batch, per finished sync, never per message), and `/metrics` reads them together with the
queues and the database at scrape time (`collector.py`). A Redis failure never fails the work
being measured: the event is dropped with a debug line.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence

import redis

from emailplatform import syncstate

logger = logging.getLogger(__name__)

PREFIX = "emailplatform:metrics"
# Upper bounds of the histograms' buckets, in seconds (+Inf is implicit).
TASK_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)
SYNC_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600)
DELIVERY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# An IDLE listener reports its connections at each refresh (every minute): a report older than
# this is from a process that is gone.
IDLE_REPORT_MAX_AGE_SECONDS = 180


def counter_key(name: str) -> str:
    return f"{PREFIX}:counter:{name}"


def histogram_key(name: str) -> str:
    return f"{PREFIX}:histogram:{name}"


IDLE_KEY = f"{PREFIX}:idle-connections"


def labels_field(labels: Mapping[str, str]) -> str:
    """A hash field naming one series: its label values, in a stable order."""
    return json.dumps(sorted(labels.items()), separators=(",", ":"))


def counter_add(name: str, labels: Mapping[str, str], amount: float = 1) -> None:
    _run(_counter_write(name, labels, amount))


def histogram_observe(
    name: str, labels: Mapping[str, str], seconds: float, buckets: Sequence[float]
) -> None:
    _run(_histogram_write(name, labels, seconds, buckets))


Write = Callable[[redis.client.Pipeline], None]


def _counter_write(name: str, labels: Mapping[str, str], amount: float) -> Write:
    def write(pipe: redis.client.Pipeline) -> None:
        if amount:
            pipe.hincrbyfloat(counter_key(name), labels_field(labels), amount)

    return write


def _histogram_write(
    name: str, labels: Mapping[str, str], seconds: float, buckets: Sequence[float]
) -> Write:
    """One observation: its bucket's count (cumulated at scrape time), the sum and the count."""
    field = labels_field(labels)
    index = bisect_left(buckets, seconds)
    bucket = str(buckets[index]) if index < len(buckets) else "+Inf"

    def write(pipe: redis.client.Pipeline) -> None:
        key = histogram_key(name)
        pipe.hincrby(key, f"{field}|{bucket}", 1)
        pipe.hincrbyfloat(key, f"{field}|sum", seconds)
        pipe.hincrby(key, f"{field}|count", 1)

    return write


def _run(*writes: Write) -> None:
    """WRITES in one round trip; a Redis failure loses them, never the caller's work."""
    try:
        pipe = syncstate.client().pipeline(transaction=False)
        for write in writes:
            write(pipe)
        if len(pipe):
            pipe.execute()
    except redis.RedisError as exc:
        logger.debug("metric not recorded: %s", exc)


# What the platform records ------------------------------------------------------------------
def task_finished(*, task: str, queue: str, state: str, seconds: float | None) -> None:
    """A Celery task ended: STATE succeeded, failed or retried."""
    labels = {"queue": queue, "task": task}
    writes = [_counter_write("tasks_total", {**labels, "state": state}, 1)]
    if seconds is not None:
        writes.append(_histogram_write("task_duration_seconds", labels, seconds, TASK_BUCKETS))
    if state == "failed":
        writes.append(_counter_write("errors_total", {"kind": "task_failure"}, 1))
    _run(*writes)


def messages_ingested(*, provider: str, created: int, damaged: int) -> None:
    """A batch was committed: its new messages, and how many of them were stored damaged
    (dead letters are counted where they are recorded, `messages.services.dead_letter_record`)."""
    _run(
        _counter_write("messages_ingested_total", {"provider": provider}, created),
        _counter_write("errors_total", {"kind": "damaged_message"}, damaged),
    )


def sync_finished(*, provider: str, kind: str, outcome: str, seconds: float) -> None:
    labels = {"provider": provider, "kind": kind}
    _run(
        _counter_write("syncs_total", {**labels, "outcome": outcome}, 1),
        _histogram_write("sync_duration_seconds", labels, seconds, SYNC_BUCKETS),
    )


def error(kind: str) -> None:
    """An error an operator counts: auth, account, task_failure, dead_letter, ..."""
    counter_add("errors_total", {"kind": kind})


def webhook_delivery(*, outcome: str, seconds: float | None = None) -> None:
    """One webhook delivery attempt: OUTCOME delivered, failed (will retry) or disabled."""
    writes = [_counter_write("webhook_deliveries_total", {"outcome": outcome}, 1)]
    if seconds is not None:
        labels = {"outcome": outcome}
        writes.append(
            _histogram_write("webhook_delivery_seconds", labels, seconds, DELIVERY_BUCKETS)
        )
    _run(*writes)


def idle_connections_report(count: int, *, process: str | None = None) -> None:
    """An IDLE listener's sessions now: summed over every live listener at scrape time."""
    name = process or f"{socket.gethostname()}:{os.getpid()}"
    value = json.dumps({"count": count, "at": time.time()})
    _run(lambda pipe: pipe.hset(IDLE_KEY, name, value))
