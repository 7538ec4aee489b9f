"""Hold IMAP IDLE connections and enqueue an incremental sync whenever a mailbox changes."""

from __future__ import annotations

import asyncio
import resource
import signal
import threading
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from emailplatform import syncstate, topics
from smtp_sync.idle import REFRESH_SECONDS, IdleSupervisor
from smtp_sync.idle_leases import Membership
from smtp_sync.idle_listener import CONNECT_RATE, RECONNECT_JITTER_SECONDS, AsyncIdleListener


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
    help = (
        "Listen with IMAP IDLE on every active IMAP account of this shard: one asyncio process "
        "holds thousands of mailboxes (--engine threads: the former thread per account)."
    )

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

        parser.add_argument("--engine", choices=("asyncio", "threads"), default="asyncio")
        parser.add_argument(
            "--connect-rate",
            type=float,
            default=CONNECT_RATE,
            help="connects per second to one IMAP server (default %(default)s)",
        )
        parser.add_argument(
            "--reconnect-jitter",
            type=float,
            default=RECONNECT_JITTER_SECONDS,
            help="a broken session's first retry comes within this many seconds "
            "(default %(default)s)",
        )
        parser.add_argument(
            "--no-notify",
            action="store_true",
            help="INBOX by IDLE only, even where the server has NOTIFY",
        )
        parser.add_argument(
            "--no-leases",
            action="store_true",
            help="hold every account of the shard, even with other listeners on it "
            "(by default the listeners of one shard share its accounts through Redis)",
        )
        parser.add_argument(
            "--stats-file", type=Path, default=None, help="the counters as JSON, every second"
        )

    def handle(self, *args, **options) -> None:
        shard, shards = parse_shard(options["shard"])
        if options["engine"] == "asyncio":
            self._run_asyncio(shard, shards, options)
            return
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

    def _run_asyncio(self, shard: int, shards: int, options: dict) -> None:
        _raise_open_files_limit()
        listener = AsyncIdleListener(
            idle_trigger,
            shard=shard,
            shards=shards,
            connect_rate=options["connect_rate"],
            reconnect_jitter=options["reconnect_jitter"],
            notify=not options["no_notify"],
            membership=None if options["no_leases"] else Membership(f"shard-{shard}-of-{shards}"),
        )
        sharing = "alone" if options["no_leases"] else "shared with its other listeners"
        self.stdout.write(f"IMAP IDLE listener (asyncio), shard {shard}/{shards}, {sharing}")

        async def main() -> None:
            stopping = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stopping.set)
            await listener.run(
                stopping,
                refresh_seconds=options["refresh_seconds"],
                heartbeat=options["heartbeat"],
                stats_file=options["stats_file"],
            )

        asyncio.run(main())


def _raise_open_files_limit() -> None:
    """One socket per held mailbox: the soft limit of open files up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
