"""Each process's name in PostgreSQL's `pg_stat_activity.application_name`.

So an operator (and the connection-bound test) can count connections per kind of process:
`emailplatform:worker:sync`, `emailplatform:imap_idle`, `emailplatform:web`, ... A process
started otherwise names itself with DB_APPLICATION_NAME.
"""

from __future__ import annotations

import os
from pathlib import Path

PREFIX = "emailplatform"
MAX_LENGTH = 63  # PostgreSQL's NAMEDATALEN - 1
WEB_COMMANDS = {"runserver", "gunicorn", "uvicorn"}


def application_name(argv: list[str], environ: dict[str, str] | None = None) -> str:
    given = (os.environ if environ is None else environ).get("DB_APPLICATION_NAME", "")
    return (given or f"{PREFIX}:{_role(argv)}")[:MAX_LENGTH]


def _role(argv: list[str]) -> str:
    words = [Path(argv[0]).name, *argv[1:]] if argv else []
    if not words or words[0].startswith("-"):  # python -c / -m: nothing to go by
        return "python"
    if words[0] == "celery" or (len(words) > 2 and words[1:3] == ["-m", "celery"]):
        return _celery_role(words)
    if words[0] in WEB_COMMANDS:
        return "web"
    if words[0] == "manage.py" and len(words) > 1:
        return "web" if words[1] in WEB_COMMANDS else words[1]
    return words[0]


def _celery_role(words: list[str]) -> str:
    """`worker:<node name before @>`, `beat`, or the celery subcommand."""
    command = next((w for w in words[1:] if w in {"worker", "beat", "flower", "inspect"}), "")
    if command != "worker":
        return command or "celery"
    for index, word in enumerate(words):
        if word in {"-n", "--hostname"} and index + 1 < len(words):
            return f"worker:{words[index + 1].split('@')[0]}"
        if word.startswith("--hostname="):
            return f"worker:{word.split('=', 1)[1].split('@')[0]}"
    return "worker"
