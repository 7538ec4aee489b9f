"""The one Celery app. Queues, routes and reliability settings live in `topics.py` and here."""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emailplatform.settings")

app = Celery("emailplatform")
app.config_from_object("django.conf:settings", namespace="CELERY")

from django.conf import settings  # noqa: E402
from django.db import close_old_connections  # noqa: E402

from . import topics  # noqa: E402  (needs the app's settings module chosen above)
from .observability import celery_signals  # noqa: E402, F401  (task metrics, log context)

app.conf.update(
    task_queues=topics.celery_queues(),
    task_default_queue=topics.QUEUE_DEFAULT,
    task_routes=topics.TASK_ROUTES,
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    # Reliability, chosen on purpose:
    # - acks_late: a task is acknowledged after it ran, so a worker that dies mid-task leaves
    #   the message on the queue for another worker (our tasks are idempotent upserts).
    # - reject_on_worker_lost: a task whose worker process was killed (OOM, kill -9) is
    #   re-queued instead of being acknowledged as failed.
    # - prefetch 1: a worker holds at most one unstarted message, so a long full-sync chunk
    #   does not sit on messages that an idle worker could run.
    # - visibility_timeout: Redis re-delivers an unacknowledged message after this long; it
    #   must exceed the longest task (time limit below) or a running task would be run twice.
    #   Sync work does not wait for it: the sync watchdog (smtp_sync.watchdog, a thread in
    #   every worker) resumes a dead worker's sync once its 30 s lock is gone, and the stale
    #   message re-delivered hours later finds nothing owed and does nothing
    #   (emailplatform.syncstate).
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_soft_time_limit=15 * 60,
    task_time_limit=20 * 60,
    # - body_encoding None: kombu's Redis transport base64-encodes every message body by
    #   default; ours are JSON (new mail already base64 in it), so that cost 1.33x the memory
    #   and an encode/decode per batch for nothing.
    broker_transport_options={
        "body_encoding": None,
        "visibility_timeout": settings.CELERY_VISIBILITY_TIMEOUT,
        "unacked_restore_interval": settings.CELERY_UNACKED_RESTORE_INTERVAL,
        "unacked_restore_throttle": settings.CELERY_UNACKED_RESTORE_THROTTLE,
    },
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    beat_scheduler="django_celery_beat.schedulers:DatabaseScheduler",
    timezone="UTC",
)
# Database connections: Celery's Django fixup closes them before and after every task unless
# DB_REUSE_MAX is set, so each task opened a new one (8-14 ms measured on the dev machine, a
# quarter of storing a one-message batch). Workers keep theirs as Django does between requests
# instead: closed at a task's start or end once older than CONN_MAX_AGE or after an error, and
# checked before its first query in a task (CONN_HEALTH_CHECKS), so a restarted PostgreSQL costs
# a reconnect, not a failed task. Still at most one per worker process (thread) and
# CONN_MAX_AGE=0 closes it after every task as before.
app.conf["CELERY_DB_REUSE_MAX"] = 2**62  # the fixup's own closing: never


@signals.task_prerun.connect
@signals.task_postrun.connect
def _close_old_connections(sender=None, **_kwargs: object) -> None:
    if not getattr(getattr(sender, "request", None), "is_eager", False):  # as the fixup does
        close_old_connections()


app.autodiscover_tasks()
