"""Celery tasks of the Gmail provider (autodiscovered)."""

from . import watch_tasks  # noqa: F401  (users.watch renewal and stop)
