"""`make run`'s start: a taken port is said before anything starts, the processes run as an
unprivileged user when it is root, and `devservices.py adduser` makes a mailbox any IMAP client
can log in to."""

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import uuid
from pathlib import Path

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from messages.models import Account
from tests.emailplatform.test_run_platform import load_run_platform
from tests.worker import process_env, stop_worker, wait_for

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from run_user import (  # noqa: E402
    cannot_run_as,
    give_paths,
    grant_access,
    platform_user,
    popen_as,
)

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")


def test_a_taken_port_is_reported_before_anything_starts():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {**os.environ, "PORT": str(port), "DATABASE_URL": "postgres://nobody@127.0.0.1:1/x"}
        done = subprocess.run(
            [sys.executable, "scripts/run_platform.py"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert f"Port {port} on 127.0.0.1 is already in use" in done.stderr
    assert "make run" in done.stderr and "PORT=" in done.stderr
    # Said first: no migration ran (its database does not exist) and no banner was printed.
    assert "Traceback" not in done.stderr
    assert "Platform running" not in done.stdout and "Admin user" not in done.stdout


def uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid in /proc/{pid}/status")


def interpreter_for(user) -> tuple[list[str], dict[str, str]]:
    """A Python that USER can import Celery with: the venv's own, or (when it lives where USER
    cannot go, e.g. under /root) the system's with the venv's packages."""
    if not cannot_run_as(user, sys.executable, ROOT):
        return [sys.executable], {}
    system = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    env = {"PYTHONPATH": sysconfig.get_paths()["purelib"]}
    if os.path.exists(system):
        return [system], env
    pytest.skip(f"no Python that {user.pw_name} can run here")


CELERY_PRIVILEGE_CHECK = (
    "import os\n"
    "from celery.platforms import check_privileges\n"
    "check_privileges({'json'})\n"  # what a worker runs at start: it warns when root
    "print('uid', os.getuid())\n"
)


@root_only
def test_as_root_children_run_unprivileged_and_celery_does_not_warn():
    user = platform_user()
    assert user is not None and user.pw_uid != 0
    python, env = interpreter_for(user)
    command = [*python, "-c", CELERY_PRIVILEGE_CHECK]
    as_root = subprocess.run(
        command, env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )
    assert "superuser privileges" in as_root.stderr  # the warning `make run` printed before
    child = popen_as(user)(
        command,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert out.strip() == f"uid {user.pw_uid}"
    assert "superuser privileges" not in err, err


@root_only
def test_as_root_a_worker_runs_unprivileged_without_celerys_superuser_warning(tmp_path):
    user = platform_user()
    assert user is not None and user.pw_uid != 0
    if cannot_run_as(user, sys.executable, ROOT):
        # A checkout or a Python under /root (mode 700): `make run` opens them by ACL first.
        assert grant_access(user, sys.executable, ROOT)
    assert cannot_run_as(user, sys.executable, ROOT) == ""
    log_path = tmp_path / "worker.log"
    log_path.touch()
    os.chown(log_path, user.pw_uid, user.pw_gid)
    node = f"runas{uuid.uuid4().hex[:8]}"
    command = [
        str(Path(sys.executable).with_name("celery")),
        "-A",
        "emailplatform",
        "worker",
        "--loglevel=INFO",
        "-n",
        f"{node}@%h",
        "--concurrency=1",
        "-Q",
        node,
    ]
    with open(log_path, "ab") as log:
        worker = popen_as(user)(
            command,
            cwd=ROOT,
            env={**process_env({"SYNC_WATCHDOG_SECONDS": "0"}), "HOME": user.pw_dir},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            lambda: "ready." in log_path.read_text() or worker.poll() is not None,
            timeout=90,
            what="the worker ready",
        )
        assert "ready." in log_path.read_text(), log_path.read_text()[-3000:]
        assert uid_of(worker.pid) == user.pw_uid
    finally:
        stop_worker(worker)
    text = log_path.read_text()
    assert "superuser privileges" not in text, text


@root_only
def test_files_an_earlier_root_run_left_stay_writable():
    user = platform_user()
    base = Path(tempfile.mkdtemp(prefix="runas-"))  # pytest's own tmp dirs are root's alone
    os.chmod(base, 0o755)  # noqa: S103
    media = base / "media"
    (media / "raw" / "2026").mkdir(parents=True)
    (media / "raw" / "2026" / "segment.zst").write_bytes(b"x")
    give_paths(user, [media])
    done = popen_as(user)(
        [
            "sh",
            "-c",
            "touch raw/2026/new && rm raw/2026/segment.zst && mkdir attachments",
        ],
        cwd=media,
    )
    assert done.wait(timeout=30) == 0
    assert sorted(p.name for p in (media / "raw" / "2026").iterdir()) == ["new"]
    shutil.rmtree(base)


@root_only
def test_a_user_who_cannot_run_the_checkout_is_named_and_root_runs_it(monkeypatch, capsys):
    """A checkout or interpreter under /root: `make run` says why and keeps running as root."""
    hidden = Path(tempfile.mkdtemp(prefix="runas-hidden-"))  # 0700, root's alone
    python = hidden / "python3"
    python.symlink_to(sys.executable)
    try:
        user = platform_user()
        why = cannot_run_as(user, str(python), ROOT)
        assert "Permission denied" in why, why
        run_platform = load_run_platform()
        monkeypatch.setattr(run_platform, "PY", str(python))
        assert run_platform.children_popen() is subprocess.Popen
    finally:
        shutil.rmtree(hidden)
    out = capsys.readouterr().out
    assert f"user {user.pw_name} cannot run it from {ROOT}" in out and "Permission denied" in out


def devservices(*args: str, env: dict[str, str] | None = None, stdin: str = ""):
    return subprocess.run(
        [sys.executable, "scripts/devservices.py", *args],
        cwd=ROOT,
        env=env or dict(os.environ),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_adduser_makes_a_mailbox_an_imap_client_logs_in_to():
    name = f"box{uuid.uuid4().hex[:8]}"
    done = devservices("adduser", name, "--dir", os.environ["SERVICES_DIR"])
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert line.startswith(f"Mailbox {name}@example.com: IMAP 127.0.0.1:"), line
    password = line.rsplit("password ", 1)[1]
    with IMAPClient("127.0.0.1", port=int(os.environ["IMAP_TEST_PORT"]), ssl=False) as client:
        client.login(name, password)
        assert client.select_folder("INBOX")[b"EXISTS"] == 0

    again = devservices(
        "adduser", name, "--dir", os.environ["SERVICES_DIR"], "--password-stdin", stdin="chosen\n"
    )
    assert again.returncode == 0 and again.stdout.strip().endswith("password chosen")
    # Dovecot checks a passwd-file for changes at most once a second.
    wait_for(lambda: logs_in(name, "chosen"), timeout=5, what="the new password taken")
    assert not logs_in(name, password)


def logs_in(name: str, password: str) -> bool:
    with IMAPClient("127.0.0.1", port=int(os.environ["IMAP_TEST_PORT"]), ssl=False) as client:
        try:
            client.login(name, password)
        except LoginError:
            return False
        return True


def test_adduser_refuses_a_name_that_is_not_one():
    done = devservices("adduser", "../etc", "--dir", os.environ["SERVICES_DIR"])
    assert done.returncode != 0 and "bad user name" in done.stderr


@pytest.mark.django_db(transaction=True)
def test_adduser_with_owner_adds_the_mailbox_as_an_account(user):
    name = f"box{uuid.uuid4().hex[:8]}"
    done = devservices(
        "adduser",
        name,
        "--dir",
        os.environ["SERVICES_DIR"],
        "--owner",
        user.username,
        env=process_env(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    account = Account.objects.get(owner=user, email_address=f"{name}@example.com")
    assert account.provider == "imap" and account.status == "active"
