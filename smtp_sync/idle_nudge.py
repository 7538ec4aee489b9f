"""Wake the IDLE listeners at once when the set of accounts to watch may have changed.

The listeners re-read their account list every REFRESH_SECONDS; without a nudge a new
account's first IDLE waits for that. A nudge is a Redis pub/sub message sent after the change
commits; each listener process subscribes and refreshes within a second. It is only a hint:
a nudge lost (Redis away, a listener reconnecting) costs the wait it would have saved.
"""

from __future__ import annotations

import logging
import random
import threading

import redis
from django.db import transaction

from emailplatform import syncstate

logger = logging.getLogger(__name__)

CHANNEL = f"{syncstate.PREFIX}:idle-refresh"
RECONNECT_MAX_SECONDS = 30


def idle_refresh_request() -> None:
    """Ask every IDLE listener to re-read its accounts, after the current transaction commits."""
    transaction.on_commit(_publish)


def _publish() -> None:
    try:
        syncstate.client().publish(CHANNEL, b"refresh")
    except redis.RedisError as exc:
        logger.info("IDLE nudge not sent (%s): the listeners' next refresh finds the change", exc)


class NudgeListener(threading.Thread):
    """Sets WAKE for every nudge; reconnects with backoff while Redis is away."""

    def __init__(self, wake: threading.Event) -> None:
        super().__init__(name="idle-nudges", daemon=True)
        self.wake = wake
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                with syncstate.client().pubsub(ignore_subscribe_messages=True) as pubsub:
                    pubsub.subscribe(CHANNEL)
                    failures = 0
                    # A refresh after (re)subscribing: a nudge sent meanwhile was missed.
                    self.wake.set()
                    while not self._stopping.is_set():
                        if pubsub.get_message(timeout=1.0) is not None:
                            self.wake.set()
            except (redis.RedisError, OSError) as exc:
                failures += 1
                delay = min(RECONNECT_MAX_SECONDS, 2 ** min(failures, 5)) * random.uniform(0.5, 1)
                logger.info("IDLE nudges unavailable (%s); retrying in %.0f s", exc, delay)
                self._stopping.wait(delay)
