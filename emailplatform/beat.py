"""Beat's scheduler with a heartbeat: the database scheduler that touches BEAT_HEARTBEAT_FILE
after every tick, so a container health check can tell a beat that still schedules from one
that hangs (`celery beat -S emailplatform.beat:HeartbeatScheduler`; docker-compose.yml).

django-celery-beat's scheduler already outlives a database restart (it logs and retries the
schedule reads and writes); a tick is at most `max_interval` (5 s) apart."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django_celery_beat.schedulers import DatabaseScheduler


class HeartbeatScheduler(DatabaseScheduler):
    def tick(self, *args, **kwargs):
        interval = super().tick(*args, **kwargs)
        if settings.BEAT_HEARTBEAT_FILE:
            Path(settings.BEAT_HEARTBEAT_FILE).touch()
        return interval
