"""When passes run: a nudge after each commit that recorded events (coalesced: at most one
pass queued per endpoint), beat's sweep for retries and anything a nudge missed, and one pass
per endpoint at a time (a Redis lock)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import kombu.exceptions
import redis
from django.conf import settings

from emailplatform import syncstate, topics

from .models import WebhookEndpoint

logger = logging.getLogger(__name__)

TASK_DELIVER = "webhooks.deliver"
TASK_SWEEP = "webhooks.sweep"
QUEUED_TTL = 60
LOCK_TTL = 120
PREFIX = f"{syncstate.PREFIX}:webhooks"

_lock = threading.Lock()
_owners: dict[int, list[int]] = {}
_owners_read_at = float("-inf")


def active_endpoints_of(owner_id: int) -> list[int]:
    """The owner's active endpoints, from a per-process map re-read every
    WEBHOOK_ENDPOINT_CACHE_SECONDS (one query for all owners, not one per commit)."""
    global _owners, _owners_read_at
    with _lock:
        if time.monotonic() - _owners_read_at > settings.WEBHOOK_ENDPOINT_CACHE_SECONDS:
            owners: dict[int, list[int]] = defaultdict(list)
            for owner, pk in WebhookEndpoint.objects.filter(is_active=True).values_list(
                "owner_id", "pk"
            ):
                owners[owner].append(pk)
            _owners, _owners_read_at = dict(owners), time.monotonic()
        return _owners.get(owner_id, [])


def forget_endpoints() -> None:
    """Re-read the map at the next commit (an endpoint was created or enabled here)."""
    global _owners_read_at
    with _lock:
        _owners_read_at = float("-inf")


def queued_key(endpoint_id: int) -> str:
    return f"{PREFIX}:queued:{endpoint_id}"


def lock_key(endpoint_id: int) -> str:
    return f"{PREFIX}:lock:{endpoint_id}"


def again_key(endpoint_id: int) -> str:
    return f"{PREFIX}:again:{endpoint_id}"


def pass_enqueue(endpoint_id: int) -> bool:
    """Queue a pass unless one is queued already; True when one was queued."""
    from emailplatform.celery import app

    client = syncstate.client()
    try:
        if not client.set(queued_key(endpoint_id), 1, nx=True, ex=QUEUED_TTL):
            return False
        app.send_task(TASK_DELIVER, args=[endpoint_id], queue=topics.QUEUE_WEBHOOKS)
    except (redis.RedisError, kombu.exceptions.OperationalError) as exc:
        logger.warning(
            "webhook endpoint %s: pass not queued (%s); the sweep will", endpoint_id, exc
        )
        with suppress(redis.RedisError):
            client.delete(queued_key(endpoint_id))
        return False
    return True


def owner_nudge(owner_id: int) -> int:
    """After a commit that recorded OWNER_ID's events: a pass for each of their endpoints."""
    return sum(pass_enqueue(pk) for pk in active_endpoints_of(owner_id))


_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)


@contextmanager
def pass_lock(endpoint_id: int) -> Iterator[bool]:
    """Yield True while holding the endpoint's lock, False if another pass holds it (that
    pass is then asked to run again when it ends, so a nudge is never lost)."""
    client = syncstate.client()
    client.delete(queued_key(endpoint_id))
    token = uuid.uuid4().hex
    if not client.set(lock_key(endpoint_id), token, nx=True, ex=LOCK_TTL):
        client.set(again_key(endpoint_id), 1, ex=LOCK_TTL)
        yield False
        return
    try:
        yield True
    finally:
        client.eval(_RELEASE, 1, lock_key(endpoint_id), token)
        if client.getdel(again_key(endpoint_id)):
            pass_enqueue(endpoint_id)
