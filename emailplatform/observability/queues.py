"""Celery queue depths as the Redis broker keeps them (kombu's Redis transport)."""

from __future__ import annotations

from emailplatform import syncstate, topics

# kombu keeps one list per priority step: the queue's name for priority 0, and the name,
# this separator and the step for the others (kombu.transport.redis, `_q_for_pri`).
PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)
UNACKED_KEY = "unacked"


def priority_keys(queue: str) -> list[str]:
    return [queue if step == 0 else f"{queue}{PRIORITY_SEPARATOR}{step}" for step in PRIORITY_STEPS]


def queue_depths() -> dict[str, int]:
    """Tasks waiting on each queue (not yet taken by a worker)."""
    pipe = syncstate.client().pipeline(transaction=False)
    for queue in topics.ALL_QUEUES:
        for key in priority_keys(queue):
            pipe.llen(key)
    lengths = iter(pipe.execute())
    return {queue: sum(next(lengths) for _ in PRIORITY_STEPS) for queue in topics.ALL_QUEUES}


def unacked_count() -> int:
    """Tasks taken by a worker and not yet acknowledged (running, or waiting for their ETA)."""
    return int(syncstate.client().hlen(UNACKED_KEY))
