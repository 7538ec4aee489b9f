#!/usr/bin/env python3
"""`make run`: migrate, make sure an admin exists, seed the demo mailbox (DEMO=0 turns it off),
then run web, a worker, beat and the IMAP IDLE listener in the foreground.

Ctrl-C (or SIGTERM) stops every process cleanly; if one of them dies, the others are stopped too.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emailplatform.topics import ALL_QUEUES  # noqa: E402

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


def main() -> int:
    os.environ.setdefault("DEBUG", "1")
    os.chdir(ROOT)
    manage("migrate", "--noinput")
    ensure_admin()
    if os.environ.get("DEMO", "1") != "0" and os.environ.get("DOVECOT_USERS_DIR"):
        manage("seed_demo")
    port = os.environ.get("PORT", "8000")
    commands = {
        "web": [PY, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        "worker": [
            CELERY,
            "-A",
            "emailplatform",
            "worker",
            "--loglevel=INFO",
            "--concurrency=2",
            "-Q",
            ",".join(ALL_QUEUES),
        ],
        "beat": [CELERY, "-A", "emailplatform", "beat", "--loglevel=INFO"],
        "imap-idle": [PY, "manage.py", "imap_idle"],
    }
    procs = {name: subprocess.Popen(cmd) for name, cmd in commands.items()}
    print(f"  Platform running: http://127.0.0.1:{port}/admin/  (Ctrl-C stops it)\n", flush=True)

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    status = 0
    while not stopping:
        for name, proc in procs.items():
            if proc.poll() is not None:
                print(f"{name} exited with {proc.returncode}; stopping the rest", flush=True)
                status = proc.returncode or 1
                stopping = True
        time.sleep(0.5)
    for proc in procs.values():
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + 15
    for proc in procs.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
    return status


if __name__ == "__main__":
    sys.exit(main())
