"""Real Celery workers for the benchmarks (prefork, as `make run` starts them), against the
environment's database and Redis: any queues (`BenchWorker`), or the message worker
(`celery -A emailplatform worker -Q email_new_message`)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from emailplatform.celery import app
from emailplatform.topics import MESSAGE_WORKER_QUEUES

from .procstats import ProcessStats, tree_stats

ROOT = Path(__file__).resolve().parent.parent


class BenchWorker:
    """One worker process on QUEUES with CONCURRENCY pool children, logging to LOG_PATH."""

    def __init__(
        self,
        queues: Sequence[str],
        concurrency: int,
        log_path: Path,
        env: dict[str, str] | None = None,
        *,
        label: str,
    ):
        self.queues = list(queues)
        self.concurrency = concurrency
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.name = f"bench-{label}-{concurrency}-{os.getpid()}@{socket.gethostname()}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> None:
        cmd = [
            str(Path(sys.executable).with_name("celery")),
            "-A",
            "emailplatform",
            "worker",
            "--loglevel=INFO",
            "-n",
            self.name,
            f"--concurrency={self.concurrency}",
            "-Q",
            ",".join(self.queues),
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"worker {self.name} exited ({self.proc.returncode}), see its log")
            if app.control.ping(destination=[self.name], timeout=0.5) and self._pool_ready():
                return
        raise SystemExit(f"worker {self.name} did not answer within {timeout:.0f}s")

    def _pool_ready(self) -> bool:
        return len(self.stats()) >= 1 + self.concurrency

    def stats(self) -> list[ProcessStats]:
        """The main process first, then each pool child."""
        return tree_stats(self.proc.pid) if self.proc is not None else []

    def cpu_seconds(self) -> float:
        return sum(s.cpu_seconds for s in self.stats())

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()  # a warm shutdown: the pool finishes what it holds
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> BenchWorker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class MessageWorker(BenchWorker):
    """The message worker (email_new_message), its batches delivered through the queue."""

    def __init__(self, concurrency: int, log_path: Path, env: dict[str, str] | None = None):
        env = {"INGEST_DELIVERY": "queue", **(env or {})}
        super().__init__(MESSAGE_WORKER_QUEUES, concurrency, log_path, env, label="message")
