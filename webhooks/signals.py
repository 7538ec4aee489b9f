"""The store's change events reach the webhooks here: a pass per endpoint after each commit."""

from __future__ import annotations

import logging
from typing import Any

from django.db import DatabaseError
from django.dispatch import receiver

from messages.events import events_committed

from .dispatch import owner_nudge

logger = logging.getLogger(__name__)


@receiver(events_committed, dispatch_uid="webhooks.owner_nudge")
def _events_committed(sender: Any, owner_id: int, **_kwargs: Any) -> None:
    try:
        owner_nudge(owner_id)
    except DatabaseError as exc:  # the commit happened: never fail its caller; beat sweeps
        logger.warning("webhooks: no nudge for owner %s (%s)", owner_id, exc)
