#!/usr/bin/env python3
"""Private PostgreSQL, Redis and Dovecot instances for development and tests.

    devservices.py exec --dir .local -- CMD...   start what is missing, run CMD with the env,
                                                 stop the services when CMD ends
    devservices.py exec --temp -- CMD...         same in a temporary directory, removed after
    devservices.py up --dir DIR / down --dir DIR
    devservices.py exec --temp --durable -- CMD  persistence as in production even in a temp dir
                                                 (PostgreSQL fsync on, Redis append-only file)
    devservices.py restart redis|postgres|dovecot --dir DIR [--down SECONDS]
                                                 stop a running service, wait, start it again on
                                                 the same port with the same data (fault drills)
    devservices.py kick USER --dir DIR           cut every IMAP session of a Dovecot user

A service is started only when its variable (DATABASE_URL, REDIS_URL, IMAP_TEST_URL) is not
already set. State lives in DIR: data, logs, ports and generated passwords (DIR/services.env),
so a second run reuses what the first one set up. Standard library only: it runs before the
virtualenv exists.
"""

from __future__ import annotations

import argparse
import base64
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SERVICE_USER = "emailplatform"

DOVECOT_CONF = """\
instance_name = emailplatform-{port}
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = 1
default_login_user = dovenull
default_internal_user = dovecot
mail_max_userip_connections = 200
auth_failure_delay = 0
imap_idle_notify_interval = 1 secs
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users/%u
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Sent {{
    special_use = \\Sent
    auto = subscribe
  }}
  mailbox Drafts {{
    special_use = \\Drafts
    auto = subscribe
  }}
  mailbox Trash {{
    special_use = \\Trash
    auto = subscribe
  }}
  mailbox Junk {{
    special_use = \\Junk
    auto = subscribe
  }}
  mailbox Archive {{
    special_use = \\Archive
    auto = subscribe
  }}
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
  # No auth penalty: tests log in with wrong passwords on purpose, and the penalty would slow
  # every later login from 127.0.0.1 by seconds.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0600
  }}
  unix_listener stats-writer {{
    mode = 0600
  }}
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_port(port: int, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        time.sleep(0.1)
    raise SystemExit(f"{what} did not start listening on port {port} within {timeout:.0f}s")


def read_env(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    values = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            values[key] = value
    return values


def write_env(path: Path, values: dict[str, str]) -> None:
    path.write_text("".join(f"{k}={v}\n" for k, v in sorted(values.items())))
    path.chmod(0o600)


def service_user() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root: when root, run it as an unprivileged user."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SERVICE_USER,
            ],
            check=True,
        )
        return pwd.getpwnam(SERVICE_USER)


def as_service_user(cmd: list[str]) -> list[str]:
    user = service_user()
    return ["runuser", "-u", user.pw_name, "--", *cmd] if user else cmd


def chown_tree(path: Path) -> None:
    user = service_user()
    if user:
        for root, dirs, files in os.walk(path):
            os.chown(root, user.pw_uid, user.pw_gid)
            for name in dirs + files:
                os.chown(os.path.join(root, name), user.pw_uid, user.pw_gid)


def pg_bin(name: str) -> str:
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    found = candidates[0] if candidates else shutil.which(name)
    if not found:
        raise SystemExit(f"PostgreSQL's {name} not found: run scripts/bootstrap.sh first")
    return found


def pid_alive(pidfile: Path) -> bool:
    try:
        pid = int(pidfile.read_text().split()[0])
        os.kill(pid, 0)
        return True
    except (FileNotFoundError, ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:
        return True


def terminate(pidfile: Path, timeout: float = 15) -> None:
    """SIGTERM the daemon in PIDFILE and wait until it is gone."""
    if not pid_alive(pidfile):
        return
    pid = int(pidfile.read_text().split()[0])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


class Services:
    def __init__(self, base: Path, fast: bool, with_dovecot: bool = True) -> None:
        self.base = base.resolve()
        self.fast = fast
        self.with_dovecot = with_dovecot
        self.state_file = self.base / "services.env"
        self.state = read_env(self.state_file)

    def save(self) -> None:
        write_env(self.state_file, self.state)

    @classmethod
    def existing(cls, base: Path) -> Services:
        """The services an earlier `up`/`exec` started in BASE, with the persistence it chose."""
        state = read_env(base / "services.env")
        if not state:
            raise SystemExit(f"no services were started in {base} (no services.env)")
        return cls(base, fast=state.get("FAST", "0") == "1")

    def remember(self, key: str, make) -> str:
        if key not in self.state:
            self.state[key] = make()
            self.save()
        return self.state[key]

    # PostgreSQL -------------------------------------------------------------------------
    def postgres(self) -> str:
        root = self.base / "postgres"
        data = root / "data"
        password = self.remember("PG_PASSWORD", lambda: secrets.token_hex(16))
        if not (data / "PG_VERSION").exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            (root / "pwfile").write_text(password + "\n")
            chown_tree(root)
            subprocess.run(
                as_service_user(
                    [
                        pg_bin("initdb"),
                        "-D",
                        str(data),
                        "-U",
                        "postgres",
                        "--auth=scram-sha-256",
                        f"--pwfile={root / 'pwfile'}",
                        "-E",
                        "UTF8",
                        "--locale=C.UTF-8",
                    ]
                ),
                check=True,
                stdout=subprocess.DEVNULL,
            )
            (root / "pwfile").unlink()
        port = int(self.state.get("PG_PORT") or 0)
        if not (port and pid_alive(data / "postmaster.pid") and port_open(port)):
            port = port if port and not port_open(port) else free_port()
            self.state["PG_PORT"] = str(port)
            self.save()
            options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200"
            if self.fast:
                options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            subprocess.run(
                as_service_user(
                    [
                        pg_bin("pg_ctl"),
                        "-D",
                        str(data),
                        "-l",
                        str(root / "postgres.log"),
                        "-o",
                        options,
                        "-w",
                        "-t",
                        "60",
                        "start",
                    ]
                ),
                check=True,
                stdout=subprocess.DEVNULL,
            )
        env = {**os.environ, "PGPASSWORD": password}
        exists = subprocess.run(
            [
                pg_bin("psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "postgres",
                "-tAc",
                "SELECT 1 FROM pg_database WHERE datname='emailplatform'",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if exists != "1":
            subprocess.run(
                [
                    pg_bin("createdb"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-U",
                    "postgres",
                    "emailplatform",
                ],
                env=env,
                check=True,
            )
        return f"postgres://postgres:{password}@127.0.0.1:{port}/emailplatform"

    def stop_postgres(self) -> None:
        data = self.base / "postgres" / "data"
        if pid_alive(data / "postmaster.pid"):
            subprocess.run(
                as_service_user([pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                stdout=subprocess.DEVNULL,
                check=False,
            )

    # Redis ------------------------------------------------------------------------------
    def redis(self) -> str:
        root = self.base / "redis"
        root.mkdir(parents=True, exist_ok=True)
        password = self.remember("REDIS_PASSWORD", lambda: secrets.token_hex(16))
        port = int(self.state.get("REDIS_PORT") or 0)
        if not (port and pid_alive(root / "redis.pid") and port_open(port)):
            port = port if port and not port_open(port) else free_port()
            self.state["REDIS_PORT"] = str(port)
            self.save()
            server = shutil.which("redis-server") or "/usr/bin/redis-server"
            if not os.path.exists(server):
                raise SystemExit("redis-server not found: run scripts/bootstrap.sh first")
            persistence = ["--save", ""] if self.fast else ["--appendonly", "yes"]
            subprocess.run(
                [
                    server,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(root),
                    "--daemonize",
                    "yes",
                    "--pidfile",
                    str(root / "redis.pid"),
                    "--logfile",
                    str(root / "redis.log"),
                    "--requirepass",
                    password,
                    *persistence,
                ],
                check=True,
            )
            wait_port(port, "Redis")
        return f"redis://:{password}@127.0.0.1:{port}/0"

    def stop_redis(self) -> None:
        pidfile = self.base / "redis" / "redis.pid"
        terminate(pidfile)

    # Dovecot (IMAP) ---------------------------------------------------------------------
    def dovecot(self) -> dict[str, str]:
        """A private Dovecot: one passwd-file per user in DIR/dovecot/users (a new user is seen at
        once, which one shared file does not guarantee), maildirs under DIR/dovecot/home."""
        root = self.base / "dovecot"
        for sub in ("run", "state", "home", "users"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        port = int(self.state.get("IMAP_PORT") or 0)
        running = pid_alive(root / "run" / "master.pid") and port and port_open(port)
        if not running:
            port = port if port and not port_open(port) else free_port()
            self.state["IMAP_PORT"] = str(port)
            self.save()
            user = service_user() or pwd.getpwuid(os.getuid())
            (root / "dovecot.conf").write_text(
                DOVECOT_CONF.format(
                    root=root, port=port, uid=user.pw_uid, gid=user.pw_gid, user=user.pw_name
                )
            )
            chown_tree(root / "home")
            binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
            if not os.path.exists(binary):
                raise SystemExit("dovecot not found: run scripts/bootstrap.sh first")
            subprocess.run([binary, "-c", str(root / "dovecot.conf")], check=True)
            wait_port(port, "Dovecot")
        return {
            "IMAP_TEST_HOST": "127.0.0.1",
            "IMAP_TEST_PORT": str(port),
            "DOVECOT_USERS_DIR": str(root / "users"),
            "DOVECOT_HOME": str(root / "home"),
        }

    def stop_dovecot(self) -> None:
        pidfile = self.base / "dovecot" / "run" / "master.pid"
        terminate(pidfile)

    # Application secrets for development ------------------------------------------------
    def app_env(self) -> dict[str, str]:
        return {
            "SECRET_KEY": self.remember("SECRET_KEY", lambda: secrets.token_urlsafe(50)),
            "CREDENTIALS_KEYS": self.remember(
                "CREDENTIALS_KEYS", lambda: base64.urlsafe_b64encode(os.urandom(32)).decode()
            ),
            "MEDIA_ROOT": str(self.base / "media"),
            "STATIC_ROOT": str(self.base / "static"),
        }

    def up(self) -> dict[str, str]:
        self.base.mkdir(parents=True, exist_ok=True)
        self.state["FAST"] = "1" if self.fast else "0"  # `restart` starts them alike
        self.save()
        env: dict[str, str] = {}
        for key, value in self.app_env().items():
            if not os.environ.get(key):
                env[key] = value
        if not os.environ.get("DATABASE_URL"):
            env["DATABASE_URL"] = self.postgres()
        if not os.environ.get("REDIS_URL") and not os.environ.get("CELERY_BROKER_URL"):
            env["REDIS_URL"] = self.redis()
            env["PRIVATE_REDIS"] = "1"  # ours alone: tests may flush their databases
        if not os.environ.get("IMAP_TEST_HOST") and self.with_dovecot:
            env.update(self.dovecot())
            # Our Dovecot listens on loopback, which the platform refuses to connect to unless
            # the operator allows it (emailplatform.netguard): allow exactly this one server.
            own = f"{env['IMAP_TEST_HOST']}:{env['IMAP_TEST_PORT']}"
            given = os.environ.get("OUTBOUND_ALLOWED_NETWORKS", "")
            env["OUTBOUND_ALLOWED_NETWORKS"] = ",".join(v for v in (given, own) if v)
        env["SERVICES_DIR"] = str(self.base)
        return env

    def down(self) -> None:
        self.stop_dovecot()
        self.stop_redis()
        self.stop_postgres()

    # Fault drills (scripts/chaos.py) ----------------------------------------------------
    def restart(self, service: str, down_seconds: float = 0.0) -> None:
        """Stop SERVICE as an operator would (PostgreSQL: `pg_ctl stop -m fast`; Redis and
        Dovecot: SIGTERM), keep it down DOWN_SECONDS, start it again on the same port with the
        same data, passwords and options."""
        if service == "postgres":
            self.stop_postgres()
            time.sleep(down_seconds)
            self.postgres()
        elif service == "redis":
            self.stop_redis()
            time.sleep(down_seconds)
            self.redis()
        elif service == "dovecot":
            self.stop_dovecot()
            time.sleep(down_seconds)
            self.dovecot()
        else:
            raise SystemExit(f"unknown service {service!r}: postgres, redis or dovecot")

    def kick(self, username: str) -> str:
        """Cut every IMAP session of USERNAME (doveadm kick, the private instance's config)."""
        doveadm = shutil.which("doveadm") or "/usr/bin/doveadm"
        conf = self.base / "dovecot" / "dovecot.conf"
        done = subprocess.run(
            [doveadm, "-c", str(conf), "kick", username],
            capture_output=True,
            text=True,
            check=False,
        )
        return (done.stdout + done.stderr).strip()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("action", choices=["up", "down", "exec", "restart", "kick"])
    parser.add_argument("target", nargs="?", help="restart: postgres|redis|dovecot; kick: USER")
    parser.add_argument("--dir", type=Path, default=Path(".local"))
    parser.add_argument("--temp", action="store_true", help="use a temporary dir, removed after")
    parser.add_argument(
        "--durable",
        action="store_true",
        help="with --temp: keep production persistence (fsync, Redis AOF) rather than speed",
    )
    parser.add_argument("--down", type=float, default=0.0, help="restart: seconds kept down")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    cmd = argv[split + 1 :]

    if args.action in ("restart", "kick"):
        if not args.target:
            parser.error(f"{args.action} needs a service (restart) or a user (kick)")
        existing = Services.existing(args.dir)
        if args.action == "restart":
            existing.restart(args.target, args.down)
        else:
            print(existing.kick(args.target))
        return 0

    base = Path(tempfile.mkdtemp(prefix="emailplatform-")) if args.temp else args.dir
    if args.temp:
        os.chmod(base, 0o755)  # noqa: S103  (the service user must reach its data dir)
    services = Services(base, fast=args.temp and not args.durable)
    if args.action == "down":
        services.down()
        return 0
    if args.action == "up":
        for key, value in services.up().items():
            print(f"export {key}='{value}'")
        return 0
    if not cmd:
        parser.error("exec needs a command after --")
    try:
        env = services.up()
        proc = subprocess.Popen(cmd, env={**os.environ, **env})
        try:
            return proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            return proc.wait()
    finally:
        services.down()
        if args.temp:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
