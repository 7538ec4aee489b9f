"""Celery tasks of the Gmail provider (autodiscovered)."""

from . import (
    change_tasks,  # noqa: F401  (write-back and sending)
    watch_tasks,  # noqa: F401  (users.watch renewal and stop)
)
