"""Pure helpers of the chaos suite (scripts/chaos.py), importable without its services: which
platform process a command line is, and whether two sync passes of one account ever ran at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from emailplatform.topics import MESSAGE_WORKER_QUEUES, SYNC_WORKER_QUEUES, WEBHOOK_WORKER_QUEUES

ROLES = ("web", "sync-worker", "message-worker", "webhook-worker", "beat", "imap-idle")
WORKER_ROLES = ("sync-worker", "message-worker", "webhook-worker")


def role_of(argv: Sequence[str]) -> str | None:
    """The platform role of a process's command line (as `scripts/run_platform.py` starts
    them), or None. A Celery worker is told apart by its node name (`-n sync@%h`), else by the
    queues it consumes (`-Q`)."""
    args = list(argv)
    if any(a in ("runserver", "gunicorn", "uvicorn") or a.endswith("/gunicorn") for a in args):
        return "web"
    if "imap_idle" in args:
        return "imap-idle"
    if "beat" in args:
        return "beat"
    if "worker" not in args:
        return None
    node = _option(args, "-n", "--hostname")
    if node:
        name = node.split("@", 1)[0]
        for role in WORKER_ROLES:
            if name == role.removesuffix("-worker"):
                return role
    queues = set((_option(args, "-Q", "--queues") or "").split(",")) - {""}
    if queues and queues <= set(MESSAGE_WORKER_QUEUES):
        return "message-worker"
    if queues and queues <= set(SYNC_WORKER_QUEUES):
        return "sync-worker"
    if queues and queues <= set(WEBHOOK_WORKER_QUEUES):
        return "webhook-worker"
    return None


def _option(args: list[str], short: str, long: str) -> str | None:
    for k, arg in enumerate(args):
        if arg in (short, long) and k + 1 < len(args):
            return args[k + 1]
        if arg.startswith(f"{long}="):
            return arg.split("=", 1)[1]
        if arg.startswith(short) and len(arg) > len(short) and not arg.startswith("--"):
            return arg[len(short) :]
    return None


class PassOverlap:
    """Watches an account's batch rows (id, publisher) as sampled over time. Each sync pass
    publishes under its own publisher id, and row ids grow: two passes ran at once when the
    id ranges seen of two publishers intersect (A's rows, then B's, then A's again). Samples
    miss rows, so the ranges seen are within the true ones: an intersection is never a false
    alarm."""

    def __init__(self) -> None:
        self.ranges: dict[str, tuple[int, int]] = {}

    def feed(self, rows: Iterable[tuple[int, str]]) -> None:
        for batch_id, publisher in rows:
            low, high = self.ranges.get(publisher, (batch_id, batch_id))
            self.ranges[publisher] = (min(low, batch_id), max(high, batch_id))

    def overlaps(self) -> list[tuple[str, str]]:
        """Pairs of publishers whose passes published at the same time."""
        spans = sorted(self.ranges.items(), key=lambda item: item[1])
        found = []
        for k, (first, (_low, high)) in enumerate(spans):
            for second, (low2, _high2) in spans[k + 1 :]:
                if low2 > high:
                    break
                found.append((first, second))
        return found
