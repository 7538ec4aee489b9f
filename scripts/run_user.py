"""`make run` as root: the platform's processes run as an unprivileged user.

Which user: the one who called sudo (SUDO_UID), so what the processes write (media, temp files)
stays theirs; as plain root, the services' own system user (`emailplatform`, which the private
PostgreSQL already runs as). Only the long-running children drop their privileges; migrate and
the demo seeding stay in the parent. Standard library only.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

from devservices import service_user


def platform_user() -> pwd.struct_passwd | None:
    """The user the children run as, or None when `make run` is not root."""
    if os.geteuid() != 0:
        return None
    sudo_uid = os.environ.get("SUDO_UID", "")
    if sudo_uid.isdigit() and sudo_uid != "0":
        try:
            return pwd.getpwuid(int(sudo_uid))
        except KeyError:
            pass
    return service_user()


def user_env(user: pwd.struct_passwd, env: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if env is None else env)
    env.update(HOME=user.pw_dir, USER=user.pw_name, LOGNAME=user.pw_name)
    return env


def popen_as(user: pwd.struct_passwd) -> Callable[..., subprocess.Popen]:
    """subprocess.Popen whose children run as USER (its uid, its primary group only)."""

    def popen(command: list[str], **kwargs: object) -> subprocess.Popen:
        kwargs.setdefault("env", user_env(user))
        return subprocess.Popen(
            command, user=user.pw_uid, group=user.pw_gid, extra_groups=[], **kwargs
        )

    return popen


def cannot_run_as(
    user: pwd.struct_passwd, python: str, root: Path, extra_env: dict[str, str] | None = None
) -> str:
    """Why USER cannot run the platform from ROOT ("" when it can): e.g. a checkout under
    /root, which other users cannot read."""
    try:
        done = subprocess.run(
            [python, "-c", "import django, celery, emailplatform.settings"],
            cwd=root,
            env={**user_env(user), **(extra_env or {})},
            user=user.pw_uid,
            group=user.pw_gid,
            extra_groups=[],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    if done.returncode == 0:
        return ""
    lines = (done.stderr or done.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit status {done.returncode}"


def give_paths(user: pwd.struct_passwd, paths: Iterable[str | Path]) -> None:
    """Create PATHS and hand them (and what earlier runs as root left in them) to USER."""
    for top in paths:
        top = Path(top)
        top.mkdir(parents=True, exist_ok=True)
        for directory, dirs, files in os.walk(top):
            for name in [directory, *(os.path.join(directory, n) for n in dirs + files)]:
                if os.lstat(name).st_uid != user.pw_uid:
                    os.lchown(name, user.pw_uid, user.pw_gid)
