"""`make run` as root: the platform's processes run as an unprivileged user.

Which user: the one who called sudo (SUDO_UID), so what the processes write (media, temp files)
stays theirs; as plain root, the services' own system user (`emailplatform`, which the private
PostgreSQL already runs as). Only the long-running children drop their privileges; migrate and
the demo seeding stay in the parent. Standard library only.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
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


def _can_enter(user: pwd.struct_passwd, path: Path) -> bool:
    """Whether USER may traverse PATH by its mode bits (ACLs aside)."""
    st = path.stat()
    if st.st_uid == user.pw_uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == user.pw_gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _closed_trees(user: pwd.struct_passwd, python: str, root: Path) -> list[Path]:
    """The checkout and the interpreter's installation, where USER cannot reach them."""
    done = subprocess.run(
        [python, "-c", "import sys; print(sys.base_prefix)"],
        capture_output=True,
        text=True,
        check=False,
    )
    trees = [root.resolve()]
    if done.returncode == 0 and done.stdout.strip():
        trees.append(Path(done.stdout.strip()).resolve())
    return [
        tree
        for tree in trees
        if not all(_can_enter(user, p) for p in [*reversed(tree.parents), tree])
    ]


def grant_access(user: pwd.struct_passwd, python: str, root: Path) -> list[str]:
    """Let USER run the platform from ROOT when root's files are closed to others (a checkout
    or a Python under /root, mode 700 on Debian): POSIX ACLs give USER traverse on each parent
    and read on the tree (inherited by what is created there later), changing no mode and no
    owner. The trees opened, for the banner; none without `setfacl` (Debian's acl package)."""
    setfacl = shutil.which("setfacl")
    if setfacl is None:
        return []
    opened = []
    try:
        trees = _closed_trees(user, python, root)
    except (OSError, subprocess.SubprocessError):
        return opened
    for tree in trees:
        entry = f"u:{user.pw_name}"
        try:
            _open_tree(setfacl, entry, user, tree)
        except (OSError, subprocess.CalledProcessError):
            continue  # the caller tests again and says why the user still cannot run it
        opened.append(str(tree))
    return opened


def _open_tree(setfacl: str, entry: str, user: pwd.struct_passwd, tree: Path) -> None:
    for parent in reversed(tree.parents):
        if not _can_enter(user, parent):
            subprocess.run([setfacl, "-m", f"{entry}:x", str(parent)], check=True)
    # The services' own state (.local: PostgreSQL, Dovecot and Postfix check its modes) and
    # .git are left alone.
    skipped = ["(", "-path", f"{tree}/.local", "-o", "-path", f"{tree}/.git", ")", "-prune"]
    read, inherit = ["-m", f"{entry}:rX"], ["-d", "-m", f"{entry}:rX"]
    for kind, options in ((["-o"], read), (["-o", "-type", "d"], inherit)):
        subprocess.run(
            ["find", str(tree), *skipped, *kind, "-exec", setfacl, *options, "{}", "+"],
            check=True,
        )


def give_paths(user: pwd.struct_passwd, paths: Iterable[str | Path]) -> None:
    """Create PATHS and hand them (and what earlier runs as root left in them) to USER."""
    for top in paths:
        top = Path(top)
        top.mkdir(parents=True, exist_ok=True)
        for directory, dirs, files in os.walk(top):
            for name in [directory, *(os.path.join(directory, n) for n in dirs + files)]:
                if os.lstat(name).st_uid != user.pw_uid:
                    os.lchown(name, user.pw_uid, user.pw_gid)
