"""One temporary directory per process, for every piece of temporary work (ingest batches, IMAP
fetches of big messages, attachment extraction).

A process killed with SIGKILL cleans nothing up: its `TemporaryDirectory`s stay. Inside
`<FILE_UPLOAD_TEMP_DIR or the system temp dir>/emailplatform-<host>-<pid>`, they are found and
removed by the next process that starts (its first use of `process_temp_dir()` removes the
directories of this host's pids that no longer run, and its own if a dead process with the same
pid left one), and by the storage sweeper (`messages.storage_sweep`); a process that exits
normally removes its own. Forked children (Celery's pool) get their own. Only directories named
with this host name are judged: a temp dir shared by containers (other pid namespaces) is safe,
each judges its own.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import socket
import tempfile
import threading
from pathlib import Path

from django.conf import settings

logger = logging.getLogger(__name__)

PREFIX = "emailplatform-"

_lock = threading.Lock()
_made: dict[int, str] = {}  # pid -> directory: a forked child must not use its parent's


def temp_base() -> Path:
    return Path(settings.FILE_UPLOAD_TEMP_DIR or tempfile.gettempdir())


def process_temp_dir() -> str:
    """This process's temporary directory, created (and the dead ones removed) on first use."""
    pid = os.getpid()
    with _lock:
        made = _made.get(pid)
        if made is not None and os.path.isdir(made):
            return made
        base = temp_base()
        mine = base / f"{_prefix()}{pid}"
        if made is None:
            # Left by an earlier process with this pid (a restarted container starts at the
            # same pids): nothing in it is ours.
            shutil.rmtree(mine, ignore_errors=True)
            temp_dirs_remove_dead(base)
        mine.mkdir(parents=True, exist_ok=True, mode=0o700)
        if made is None:
            atexit.register(_remove_at_exit, pid, mine)
        _made[pid] = str(mine)
        return str(mine)


def _remove_at_exit(pid: int, directory: Path) -> None:
    if os.getpid() == pid:  # not in a forked child, which inherits the handler
        shutil.rmtree(directory, ignore_errors=True)


def _prefix() -> str:
    return f"{PREFIX}{socket.gethostname()}-"


def pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def temp_dirs_remove_dead(base: Path | None = None) -> list[str]:
    """Remove the temporary directories of processes that no longer run; their names."""
    base = base or temp_base()
    removed = []
    try:
        entries = list(base.iterdir())
    except FileNotFoundError:
        return removed
    prefix = _prefix()
    for entry in entries:
        suffix = entry.name.removeprefix(prefix)
        if entry.name == suffix or not suffix.isdigit() or not entry.is_dir():
            continue
        pid = int(suffix)
        if pid == os.getpid() or pid_running(pid):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry.name)
        logger.info("removed %s, left by process %s that no longer runs", entry, pid)
    return removed
