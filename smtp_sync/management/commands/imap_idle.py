"""Hold IMAP IDLE connections and enqueue an incremental sync whenever a mailbox changes."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from emailplatform import syncstate, topics
from smtp_sync.idle import REFRESH_SECONDS, IdleSupervisor


def idle_trigger(account_id: int) -> None:
    """A mailbox changed: ask for an incremental sync, coalesced (a burst of notices while one
    is queued or running makes no second task; the running one runs once more at its end)."""
    topics.sync_request_now(account_id, "imap", kind=syncstate.INCREMENTAL)


def parse_shard(value: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in value.split("/"))
    except ValueError as exc:
        raise CommandError(f"--shard must look like 0/4, not {value!r}") from exc
    if not 0 <= index < count:
        raise CommandError(f"--shard {value}: the index must be in 0..{count - 1}")
    return index, count


class Command(BaseCommand):
    help = "Listen with IMAP IDLE on every active IMAP account of this shard."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--shard", default="0/1", help="i/n: take accounts whose id %% n == i")
        parser.add_argument(
            "--refresh-seconds",
            type=float,
            default=REFRESH_SECONDS,
            help="how often the account list is read again (default %(default)s)",
        )
        parser.add_argument(
            "--heartbeat",
            type=Path,
            default=None,
            help="a file touched after each good refresh, for a health check to read its age",
        )

    def handle(self, *args, **options) -> None:
        shard, shards = parse_shard(options["shard"])
        supervisor = IdleSupervisor(idle_trigger, shard=shard, shards=shards)
        stopping = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stopping.set())
        self.stdout.write(f"IMAP IDLE listener, shard {shard}/{shards}")
        try:
            supervisor.run(
                stopping, refresh_seconds=options["refresh_seconds"], heartbeat=options["heartbeat"]
            )
        finally:
            supervisor.stop()
