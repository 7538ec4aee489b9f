#!/usr/bin/env python3
"""`make run`: migrate, make sure an admin exists, seed the demo mailbox (DEMO=0 turns it off),
then run web, a sync worker, a message worker, beat and the IMAP IDLE listener in the
foreground.

Ctrl-C (or SIGTERM) stops every process cleanly. A process that dies is started again after a
backoff (1 s, doubling up to 60 s; back to 1 s once it has stayed up a minute) while the others
go on: a worker killed by the OOM killer or a listener that crashed does not stop the platform.

This is the development setup: web is Django's runserver with DEBUG on (static files served by
it); the Docker image serves with gunicorn (see the Dockerfile and docker-compose.yml).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from run_port import port_taken_message  # noqa: E402
from run_user import cannot_run_as, give_paths, grant_access, platform_user, popen_as  # noqa: E402

from emailplatform.topics import (  # noqa: E402
    MESSAGE_WORKER_QUEUES,
    SYNC_WORKER_QUEUES,
    WEBHOOK_WORKER_QUEUES,
)

PY = sys.executable
CELERY = str(Path(PY).with_name("celery"))


def manage(*args: str) -> None:
    subprocess.run([PY, "manage.py", *args], cwd=ROOT, check=True)


def ensure_admin() -> None:
    password = secrets.token_urlsafe(12)
    code = (
        "from django.contrib.auth import get_user_model\n"
        "User = get_user_model()\n"
        "if User.objects.filter(username='admin').exists():\n"
        "    print('exists')\n"
        "else:\n"
        f"    User.objects.create_superuser('admin', 'admin@localhost', {password!r})\n"
        "    print('created')\n"
    )
    out = subprocess.run(
        [PY, "manage.py", "shell", "-c", code], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    if out.endswith("created"):
        print(f"\n  Admin user created: admin / {password}   (shown once; keep it)\n", flush=True)
    else:
        print(
            "\n  Admin user: admin (password shown on first run; reset with "
            "`.venv/bin/python manage.py changepassword admin`)\n",
            flush=True,
        )


@dataclass
class Child:
    name: str
    command: list[str]
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    delay: float = 0.0  # the backoff before the next restart
    restart_at: float | None = None  # when it is due to start again, once it died
    history: list[tuple[float, int]] = field(default_factory=list)  # (died at, exit status)


class Supervisor:
    """Runs named commands and restarts each one that exits, with exponential backoff per child.

    A child that stayed up at least STABLE_AFTER seconds restarts after BACKOFF_START again."""

    def __init__(
        self,
        commands: dict[str, list[str]],
        *,
        backoff_start: float = 1.0,
        backoff_max: float = 60.0,
        stable_after: float = 60.0,
        poll_interval: float = 0.5,
        log: Callable[[str], None] | None = None,
        popen: Callable[..., subprocess.Popen] = subprocess.Popen,
    ) -> None:
        self.children = {name: Child(name, command) for name, command in commands.items()}
        self.backoff_start = backoff_start
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self.poll_interval = poll_interval
        self.log = log or (lambda line: print(line, flush=True))
        self.popen = popen

    def start(self) -> None:
        for child in self.children.values():
            self._spawn(child)

    def _spawn(self, child: Child) -> None:
        child.proc = self.popen(child.command)
        child.started_at = time.monotonic()
        child.restart_at = None

    def poll(self) -> None:
        """Notice children that exited and start those whose backoff is over."""
        now = time.monotonic()
        for child in self.children.values():
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.restarts += 1
                    self.log(f"{child.name}: starting again (restart {child.restarts})")
                    self._spawn(child)
                continue
            if child.proc is None or child.proc.poll() is None:
                continue
            status = child.proc.returncode
            child.history.append((now, status))
            if now - child.started_at >= self.stable_after:
                child.delay = self.backoff_start
            else:
                child.delay = min(self.backoff_max, max(self.backoff_start, child.delay * 2))
            child.restart_at = now + child.delay
            self.log(
                f"{child.name} exited with {status} after {now - child.started_at:.0f}s;"
                f" restarting in {child.delay:.0f}s"
            )

    def run(self, should_stop: Callable[[], bool]) -> None:
        self.start()
        while not should_stop():
            self.poll()
            time.sleep(self.poll_interval)

    def stop(self, timeout: float = 15.0) -> None:
        running = [c.proc for c in self.children.values() if c.proc and c.proc.poll() is None]
        for proc in running:
            proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in running:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def platform_commands(port: str) -> dict[str, list[str]]:
    """The platform's processes by name (what `make run` supervises).

    Two kinds of Celery worker (see README, "Worker layout"): the sync worker runs
    SYNC_WORKER_CONCURRENCY passes at once (default 4: they mostly wait on IMAP servers and on
    the message workers, so more than the cores pay); the message worker runs one process per
    core (MESSAGE_WORKER_CONCURRENCY; parsing and storing is CPU-bound: more only contend)."""
    sync_concurrency = os.environ.get("SYNC_WORKER_CONCURRENCY", "4")
    message_concurrency = os.environ.get("MESSAGE_WORKER_CONCURRENCY", str(os.cpu_count() or 1))
    webhook_concurrency = os.environ.get("WEBHOOK_WORKER_CONCURRENCY", "2")
    commands = {
        "web": [PY, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        "sync-worker": celery_worker("sync", SYNC_WORKER_QUEUES, sync_concurrency),
        "message-worker": celery_worker("message", MESSAGE_WORKER_QUEUES, message_concurrency),
        # Webhook deliveries wait on other people's servers: a worker of their own.
        "webhook-worker": celery_worker("webhook", WEBHOOK_WORKER_QUEUES, webhook_concurrency),
        "beat": [CELERY, "-A", "emailplatform", "beat", "--loglevel=INFO"],
        "imap-idle": [PY, "manage.py", "imap_idle"],
    }
    if os.environ.get("FLOWER_PORT"):
        commands["flower"] = flower_command(os.environ["FLOWER_PORT"])
    return commands


def flower_command(port: str) -> list[str]:
    """Flower (FLOWER_PORT set) on the loopback address; FLOWER_BASIC_AUTH=user:password adds
    HTTP basic auth."""
    command = [CELERY, "-A", "emailplatform", "flower", "--address=127.0.0.1", f"--port={port}"]
    if os.environ.get("FLOWER_BASIC_AUTH"):
        command.append(f"--basic_auth={os.environ['FLOWER_BASIC_AUTH']}")
    return command


def celery_worker(name: str, queues: tuple[str, ...], concurrency: str) -> list[str]:
    return [
        CELERY,
        "-A",
        "emailplatform",
        "worker",
        "--loglevel=INFO",
        "-n",
        f"{name}@%h",
        f"--concurrency={concurrency}",
        "-Q",
        ",".join(queues),
    ]


def children_popen() -> Callable[..., subprocess.Popen]:
    """How the children start: as an unprivileged user when `make run` is root (README, "make
    run as root"), else as whoever runs it."""
    user = platform_user()
    if user is None:
        return subprocess.Popen
    why = cannot_run_as(user, PY, ROOT)
    if why and (opened := grant_access(user, PY, ROOT)):
        print(
            f"  User {user.pw_name} may now read {', '.join(opened)} (POSIX ACLs; no mode or"
            " owner changed).",
            flush=True,
        )
        why = cannot_run_as(user, PY, ROOT)
    if why:
        print(
            f"  Running the platform as root: user {user.pw_name} cannot run it from {ROOT}"
            f" ({why}).\n  Use a checkout that user can read, or `make run` as a normal user.\n",
            flush=True,
        )
        return subprocess.Popen
    give_paths(user, [p for p in (os.environ.get("MEDIA_ROOT"),) if p])
    print(f"  Processes run as user {user.pw_name} (not root).", flush=True)
    return popen_as(user)


def demo_banner() -> str:
    """How to reach the demo mailbox with any IMAP client ("" without the demo)."""
    users = os.environ.get("DOVECOT_USERS_DIR")
    passwd = Path(users) / "demo" if users else None
    if not passwd or not passwd.exists():
        return ""
    password = passwd.read_text().split("{PLAIN}", 1)[-1].strip()
    host, port = os.environ.get("IMAP_TEST_HOST"), os.environ.get("IMAP_TEST_PORT")
    return (
        f"  Demo mailbox over IMAP: {host}:{port}, no TLS, user demo, password {password}\n"
        "  (more mailboxes: .venv/bin/python scripts/devservices.py adduser NAME --dir .local)\n"
    )


def main() -> int:
    os.environ.setdefault("DEBUG", "1")
    os.chdir(ROOT)
    port = os.environ.get("PORT", "8000")
    taken = port_taken_message(int(port))
    if taken:
        print(f"\n  {taken}\n", file=sys.stderr, flush=True)
        return 1
    manage("migrate", "--noinput")
    ensure_admin()
    if os.environ.get("DEMO", "1") != "0" and os.environ.get("DOVECOT_USERS_DIR"):
        manage("seed_demo")
    commands = platform_commands(port)
    supervisor = Supervisor(commands, popen=children_popen())
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    print(demo_banner(), end="", flush=True)
    if "flower" in commands:
        print(f"  Flower: http://127.0.0.1:{os.environ['FLOWER_PORT']}/", flush=True)
    print(f"  Platform running: http://127.0.0.1:{port}/admin/  (Ctrl-C stops it)\n", flush=True)
    try:
        supervisor.run(lambda: stopping)
    finally:
        supervisor.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
