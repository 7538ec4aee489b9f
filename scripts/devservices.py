#!/usr/bin/env python3
"""Private PostgreSQL, Redis, Dovecot and Postfix instances for development and tests.

    devservices.py exec --dir .local -- CMD...   start what is missing, run CMD with the env,
                                                 stop the services when CMD ends
    devservices.py exec --temp -- CMD...         same in a temporary directory, removed after
    devservices.py up --dir DIR / down --dir DIR
    devservices.py exec --temp --durable -- CMD  persistence as in production even in a temp dir
                                                 (PostgreSQL fsync on, Redis append-only file)
    devservices.py restart redis|postgres|dovecot|postfix --dir DIR [--down SECONDS]
                                                 stop a running service, wait, start it again on
                                                 the same port with the same data (fault drills)
    devservices.py kick USER --dir DIR           cut every IMAP session of a Dovecot user
    devservices.py adduser USER --dir DIR [--password-stdin] [--owner NAME]
                                                 a new mailbox USER@example.com in the private
                                                 Dovecot (password generated unless given on
                                                 stdin); --owner adds it as NAME's account

A service is started only when its variable (DATABASE_URL, REDIS_URL, IMAP_TEST_HOST,
POSTFIX_SMTP_HOST) is not already set. Postfix, the MTA that delivers into Dovecot (LMTP) and
bounces with real DSNs, needs root and the `postfix` package: without them the other services
start anyway and POSTFIX_MISSING says why (only the tests that need Postfix fail). State lives
in DIR: data, logs, ports and generated passwords (DIR/services.env), so a second run reuses
what the first one set up. Standard library only: it runs before the
virtualenv exists.
"""

from __future__ import annotations

import argparse
import base64
import glob
import os
import pwd
import re
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
protocols = {protocols}
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
{lmtp}"""

# Postfix's LMTP client reaches Dovecot through this socket (in base_dir), as the postfix user.
# LMTP's RCPT is user@domain; the users are plain names (one passwd-file each): %Ln. A user
# without a passwd-file is refused (550 5.1.1), so Postfix bounces with a DSN.
DOVECOT_LMTP = """\
service lmtp {
  unix_listener lmtp {
    mode = 0666
  }
}
protocol lmtp {
  auth_username_format = %Ln
}
"""
DOVECOT_LMTP_BINARY = "/usr/lib/dovecot/lmtp"

# The domain of the Dovecot users for Postfix: USER@MAIL_DOMAIN goes to USER's INBOX.
MAIL_DOMAIN = "example.com"

POSTFIX_MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = {root}/postfix.log
maillog_file_prefixes = {root}
syslog_name = postfix-{port}
myhostname = mx.{domain}
mydomain = {domain}
myorigin = {domain}
mydestination = {domain}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_peername_lookup = no
# Every local recipient is accepted at RCPT; Dovecot (LMTP) refuses the unknown ones, and the
# sender gets a DSN, as from a server that checks recipients after the SMTP session.
local_recipient_maps =
local_transport = lmtp:unix:{lmtp_socket}
alias_maps =
alias_database =
# Nothing leaves this machine: smtpd refuses other domains at RCPT (550 5.1.2).
default_transport = error:5.1.2 the test MTA delivers to {domain} only
relay_transport = error:5.1.2 the test MTA delivers to {domain} only
# Retries come within seconds, not minutes (e.g. while Dovecot restarts in a fault drill).
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 3s
delay_warning_time = 0h
biff = no
"""

POSTFIX_MASTER_CF = """\
127.0.0.1:{port} inet n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
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
            lmtp = os.path.exists(DOVECOT_LMTP_BINARY)
            (root / "dovecot.conf").write_text(
                DOVECOT_CONF.format(
                    root=root,
                    port=port,
                    uid=user.pw_uid,
                    gid=user.pw_gid,
                    user=user.pw_name,
                    protocols="imap lmtp" if lmtp else "imap",
                    lmtp=DOVECOT_LMTP if lmtp else "",
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

    # Postfix (SMTP in, LMTP into Dovecot) ----------------------------------------------
    def postfix_missing(self) -> str:
        """Why Postfix cannot run here ("" when it can)."""
        if os.geteuid() != 0:
            return "a private Postfix needs root (its master process changes user)"
        if not os.path.exists("/usr/sbin/postfix"):
            return "postfix is not installed: run scripts/bootstrap.sh"
        if not os.path.exists(DOVECOT_LMTP_BINARY):
            return "dovecot-lmtpd is not installed: run scripts/bootstrap.sh"
        return ""

    def postfix(self) -> dict[str, str]:
        """A private Postfix on a loopback port: mail for MAIL_DOMAIN goes by LMTP to the Dovecot
        of this DIR, its log is DIR/postfix/postfix.log."""
        return self.postfix_ready(self.postfix_start())

    def postfix_start(self) -> tuple[subprocess.Popen | None, int]:
        """Begin to start Postfix unless it runs (`postfix start` checks its files for a second
        or two, meanwhile the other services start); postfix_ready() waits for it. Dovecot need
        not be up yet: the LMTP socket's path is known, and is used at the first delivery."""
        root = self.base / "postfix"
        conf = root / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        port = int(self.state.get("SMTP_PORT") or 0)
        if port and pid_alive(root / "queue" / "pid" / "master.pid") and port_open(port):
            return None, port
        port = port if port and not port_open(port) else free_port()
        self.state["SMTP_PORT"] = str(port)
        self.save()
        (conf / "main.cf").write_text(
            POSTFIX_MAIN_CF.format(
                root=root,
                port=port,
                domain=MAIL_DOMAIN,
                lmtp_socket=self.base / "dovecot" / "run" / "lmtp",
            )
        )
        (conf / "master.cf").write_text(POSTFIX_MASTER_CF.format(port=port))
        (root / "queue").mkdir(exist_ok=True)  # root's; `postfix start` makes the rest
        (root / "data").mkdir(exist_ok=True)
        postfix_user = pwd.getpwnam("postfix")
        os.chown(root / "data", postfix_user.pw_uid, postfix_user.pw_gid)
        starting = subprocess.Popen(
            ["/usr/sbin/postfix", "-c", str(conf), "start"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        return starting, port

    def postfix_ready(self, started: tuple[subprocess.Popen | None, int]) -> dict[str, str]:
        starting, port = started
        root = self.base / "postfix"
        if starting is not None:
            output, _ = starting.communicate()
            if starting.returncode != 0:
                # Postfix reports a failed start to its log (and to a terminal), not to a pipe.
                log = root / "postfix.log"
                tail = log.read_text().splitlines()[-20:] if log.exists() else []
                raise SystemExit("Postfix did not start:\n" + output + "\n".join(tail))
            wait_port(port, "Postfix")
        return {
            "POSTFIX_SMTP_HOST": "127.0.0.1",
            "POSTFIX_SMTP_PORT": str(port),
            "POSTFIX_MAIL_DOMAIN": MAIL_DOMAIN,
            "POSTFIX_CONFIG_DIR": str(root / "conf"),
            "POSTFIX_LOG": str(root / "postfix.log"),
        }

    def stop_postfix(self) -> None:
        """SIGTERM to the master, as `postfix stop` does, and wait until it is gone (so that a
        restart finds its port free)."""
        terminate(self.base / "postfix" / "queue" / "pid" / "master.pid")

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
        own_dovecot = not os.environ.get("IMAP_TEST_HOST") and self.with_dovecot
        postfix = None
        if own_dovecot and not os.environ.get("POSTFIX_SMTP_HOST"):
            missing = self.postfix_missing()
            if missing:
                env["POSTFIX_MISSING"] = missing
                print(f"devservices: no private Postfix: {missing}", file=sys.stderr)
            else:
                postfix = self.postfix_start()
        try:
            env.update(self.up_others(own_dovecot))
        except BaseException:
            if postfix and postfix[0]:
                postfix[0].communicate()  # let it finish starting, so that `down` stops it
            raise
        if postfix:
            env.update(self.postfix_ready(postfix))
        # Our servers listen on loopback, which the platform refuses to connect to unless the
        # operator allows it (emailplatform.netguard): allow exactly these ones.
        own = [
            f"{env[host]}:{env[port]}"
            for host, port in (
                ("IMAP_TEST_HOST", "IMAP_TEST_PORT"),
                ("POSTFIX_SMTP_HOST", "POSTFIX_SMTP_PORT"),
            )
            if host in env
        ]
        if own:
            given = os.environ.get("OUTBOUND_ALLOWED_NETWORKS", "")
            env["OUTBOUND_ALLOWED_NETWORKS"] = ",".join(v for v in (given, *own) if v)
        env["SERVICES_DIR"] = str(self.base)
        return env

    def up_others(self, own_dovecot: bool) -> dict[str, str]:
        env: dict[str, str] = {}
        if not os.environ.get("DATABASE_URL"):
            env["DATABASE_URL"] = self.postgres()
        if not os.environ.get("REDIS_URL") and not os.environ.get("CELERY_BROKER_URL"):
            env["REDIS_URL"] = self.redis()
            env["PRIVATE_REDIS"] = "1"  # ours alone: tests may flush their databases
        if own_dovecot:
            env.update(self.dovecot())
        return env

    def down(self) -> None:
        self.stop_postfix()
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
        elif service == "postfix":
            self.stop_postfix()
            time.sleep(down_seconds)
            self.postfix()
        else:
            raise SystemExit(f"unknown service {service!r}: postgres, redis, dovecot or postfix")

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

    def add_mailbox(self, username: str, password: str) -> dict[str, str]:
        """A Dovecot user (one passwd-file in DIR/dovecot/users, seen at the next login); its
        IMAP settings. An existing user gets the new password."""
        if not USERNAME_RE.fullmatch(username):
            raise SystemExit(f"bad user name {username!r}: letters, digits, . _ - only")
        if "IMAP_PORT" not in self.state:
            raise SystemExit(f"no private Dovecot in {self.base}: start `make run` first")
        users = self.base / "dovecot" / "users"
        users.mkdir(parents=True, exist_ok=True)
        # A new file renamed over the old one: Dovecot sees a new inode, re-reads it at once.
        staged = users / f".{username}.new"
        staged.write_text(f"{username}:{{PLAIN}}{password}\n")
        staged.chmod(0o600)
        if os.geteuid() == 0:  # Dovecot's auth process reads it as its internal user
            internal = pwd.getpwnam("dovecot")
            os.chown(staged, internal.pw_uid, internal.pw_gid)
        staged.replace(users / username)
        return {
            "address": f"{username}@{MAIL_DOMAIN}",
            "host": "127.0.0.1",
            "port": self.state["IMAP_PORT"],
            "username": username,
            "password": password,
        }


USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def add_account(services: Services, mailbox: dict[str, str], owner: str) -> int:
    """Register MAILBOX as OWNER's IMAP account through `manage.py add_account`, with the
    environment of the running services (the same database, keys and allowed hosts)."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, **services.up()}
    return subprocess.run(
        [
            str(root / ".venv" / "bin" / "python"),
            "manage.py",
            "add_account",
            "--owner",
            owner,
            "--email",
            mailbox["address"],
            "--imap-host",
            mailbox["host"],
            "--imap-port",
            mailbox["port"],
            "--security",
            "none",
            "--username",
            mailbox["username"],
            "--password-stdin",
        ],
        cwd=root,
        env=env,
        input=mailbox["password"] + "\n",
        text=True,
        check=False,
    ).returncode


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("action", choices=["up", "down", "exec", "restart", "kick", "adduser"])
    parser.add_argument(
        "target", nargs="?", help="restart: postgres|redis|dovecot|postfix; kick, adduser: USER"
    )
    parser.add_argument(
        "--password-stdin", action="store_true", help="adduser: read the password from stdin"
    )
    parser.add_argument("--owner", help="adduser: add the mailbox as this user's account too")
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

    if args.action in ("restart", "kick", "adduser"):
        if not args.target:
            parser.error(f"{args.action} needs a service (restart) or a user (kick, adduser)")
        existing = Services.existing(args.dir)
        if args.action == "adduser":
            given = sys.stdin.readline().rstrip("\n") if args.password_stdin else ""
            mailbox = existing.add_mailbox(args.target, given or secrets.token_urlsafe(12))
            print(
                f"Mailbox {mailbox['address']}: IMAP {mailbox['host']}:{mailbox['port']}"
                f" (no TLS), user {mailbox['username']}, password {mailbox['password']}"
            )
            return add_account(existing, mailbox, args.owner) if args.owner else 0
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
