"""A real Celery worker process against the test database and the test session's Redis."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def test_database_url() -> str:
    db = connection.settings_dict
    auth = quote(db["USER"] or "", safe="")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"], safe="")
    return f"postgres://{auth}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def process_env(extra_env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a platform process run against the test database and broker."""
    return {
        **os.environ,
        "DATABASE_URL": test_database_url(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "CREDENTIALS_KEYS": ",".join(settings.CREDENTIALS_KEYS),
        "INGEST_DELIVERY": settings.INGEST_DELIVERY,
        **(extra_env or {}),
    }


def worker_command(node: str, queues: str, concurrency: int) -> list[str]:
    """A worker's command line as `make run` and docker-compose start theirs (prefork,
    -n node@%h)."""
    return [
        str(Path(sys.executable).with_name("celery")),
        "-A",
        "emailplatform",
        "worker",
        "--loglevel=INFO",
        "-n",
        f"{node}@%h",
        f"--concurrency={concurrency}",
        "-Q",
        queues,
    ]


def start_worker(
    queues: list[str],
    log_path: Path,
    extra_env: dict[str, str] | None = None,
    pool: str = "prefork",
) -> subprocess.Popen:
    cmd = [
        str(Path(sys.executable).with_name("celery")),
        "-A",
        "emailplatform",
        "worker",
        f"--pool={pool}",
        "--concurrency=1",
        "--loglevel=INFO",
        "--without-heartbeat",
        "--without-gossip",
        "--without-mingle",
        "-Q",
        ",".join(queues),
    ]
    log = open(log_path, "ab")  # noqa: SIM115  (kept open for the process' lifetime)
    return subprocess.Popen(
        cmd, cwd=ROOT, env=process_env(extra_env), stdout=log, stderr=subprocess.STDOUT
    )


def start_beat(log_path: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    cmd = [
        str(Path(sys.executable).with_name("celery")),
        "-A",
        "emailplatform",
        "beat",
        "--loglevel=INFO",
        "-S",
        "emailplatform.beat:HeartbeatScheduler",
        "--pidfile=",
    ]
    log = open(log_path, "ab")  # noqa: SIM115  (kept open for the process' lifetime)
    return subprocess.Popen(
        cmd, cwd=ROOT, env=process_env(extra_env), stdout=log, stderr=subprocess.STDOUT
    )


def stop_worker(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(
    condition: Callable[[], bool],
    timeout: float = 30.0,
    what: str = "condition",
    interval: float = 0.2,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A redis-server of the test's own, on a free loopback port, that the test may restart.

    Not the session's Redis: restarting that one would break every other test running beside."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        server = shutil.which("redis-server") or "/usr/bin/redis-server"
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
            + ["no", "--dir", str(self.directory)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._answers, timeout=10, what="redis-server to answer")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self, down_seconds: float = 1.0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()


def other_backends() -> set[int]:
    """Client connections to the test database other than this thread's own."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
        return {pid for (pid,) in cursor.fetchall()}


def terminate_other_backends() -> None:
    """Cut every other connection to the test database, as a restarted server would."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
