#!/usr/bin/env python3
"""One IDLE listener process holding many mailboxes on a local Dovecot.

    make bench-idle-scale BENCH_ARGS="--mailboxes 10000"
    python bench/idle_scale.py --mailboxes 1000      (services' env already set)

A Dovecot of the bench's own (a temp dir, a free loopback port) with the high-performance
settings: login processes with `service_count = 0`, `imap_hibernate_timeout` (an idling client
moves to the imap-hibernate process and its imap process exits), raised process and client
limits and `ulimit -n`, one passwd-file for all users, spread over uids of their own (see
FIRST_UID). With --tls the listener connects over implicit TLS (a self-signed certificate the
listener trusts through SSL_CERT_FILE). --mailboxes accounts of distinct Dovecot users are
bulk-created in the database (IDLE among their recorded capabilities), then one
`manage.py imap_idle` (the asyncio listener, the production command and trigger) is started
with no account, its baseline RSS read, and nudged to load them all. Printed:

- time to hold every mailbox at the listener's connect rate (--connect-rate per server);
- listener RSS, and per mailbox (all of it, and above the baseline);
- database connections of the listener (pg_stat_activity by client pid), peak and idle;
- CPU of the listener while all are held and nothing happens (--idle-seconds);
- APPEND -> trigger for --samples random mailboxes: the task on the Redis queue, timed from
  the end of the APPEND, beside when the server's notice reached an IDLE client of the
  bench's own on the same mailbox (the server's part): p50/p95 of both and of the difference;
- time for all to be held again after Dovecot restarts (stopped, started on the same port).

Without --notify the listener runs with --no-notify: Dovecot does not hibernate a session
with NOTIFY set, so every held mailbox would keep an imap process (about 2-4 MB each).

Load on the machine is printed beside the figures (loadavg and CPU seconds of the others).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emailplatform.settings")

import django  # noqa: E402

django.setup()

import redis  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from bench.procstats import process_stats  # noqa: E402
from emailplatform import syncstate, topics  # noqa: E402
from messages.crypto import encrypt_json  # noqa: E402
from messages.models import Account  # noqa: E402
from scripts.devservices import free_port, wait_port  # noqa: E402
from smtp_sync.idle_nudge import CHANNEL  # noqa: E402
from smtp_sync.models import ImapSettings  # noqa: E402

BENCH_USERNAME = "bench-idle-scale"
# Dovecot hands a hibernating session's inotify instance to imap-hibernate, and the kernel
# allows fs.inotify.max_user_instances (128 by default) per uid: one uid can have at most about
# 128 sessions hibernated. Instead of raising that for the whole machine, the bench's users
# are spread over uids of their own, USERS_PER_UID each (numeric, no passwd entry needed).
FIRST_UID = 61000
USERS_PER_UID = 40
PASSWORD = "bench-password"  # noqa: S105 (the bench Dovecot's users)
CAPABILITIES = ["IMAP4REV1", "IDLE", "CONDSTORE", "QRESYNC", "UIDPLUS", "MOVE", "NOTIFY"]

DOVECOT_CONF = """\
instance_name = bench-idle-{port}
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
first_valid_uid = 1
default_login_user = dovenull
default_internal_user = dovecot
auth_failure_delay = 0
mail_max_userip_connections = 50
imap_hibernate_timeout = {hibernate}s
# A session whose imap process found no inotify instance left (fs.inotify.max_user_instances,
# 128 by default, per uid) looks for changes this often instead of the default 30 s.
mailbox_idle_check_interval = 1 secs
default_process_limit = 4096
default_client_limit = {clients}
default_vsz_limit = 1G
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root}/passwd
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
service imap-login {{
  chroot =
  service_count = 0
  process_min_avail = 2
  client_limit = {clients}
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
  }}
}}
service imap {{
  process_limit = 4096
  unix_listener imap-master {{
    user = $default_internal_user
  }}
}}
service imap-hibernate {{
  client_limit = {clients}
  process_limit = 4
  unix_listener imap-hibernate {{
    mode = 0660
    group = $default_internal_group
  }}
}}
service anvil {{
  chroot =
  client_limit = {anvil}
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service auth {{
  client_limit = {anvil}
}}
service stats {{
  client_limit = {anvil}
  unix_listener stats-reader {{
    mode = 0600
  }}
  unix_listener stats-writer {{
    mode = 0600
  }}
}}
"""


def log(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def machine_busy(seconds: float) -> float:
    """Cores busy (all processes, this machine) over SECONDS, from /proc/stat."""

    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # all, idle + iowait

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    share = 1 - (idle1 - idle0) / max(1, total1 - total0)
    return share * (os.cpu_count() or 1)


# Dovecot ---------------------------------------------------------------------------------------
class Dovecot:
    def __init__(self, root: Path, mailboxes: int, hibernate: int, tls: bool) -> None:
        self.root = root
        self.port = free_port()
        self.tls_port = free_port() if tls else 0
        ssl = "ssl = no"
        if tls:
            self.cert = root / "cert.pem"
            subprocess.run(
                [
                    "openssl",
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=127.0.0.1",
                    "-addext",
                    "subjectAltName=IP:127.0.0.1",
                    "-keyout",
                    str(root / "key.pem"),
                    "-out",
                    str(self.cert),
                ],
                check=True,
                capture_output=True,
            )
            ssl = f"ssl = yes\nssl_cert = <{self.cert}\nssl_key = <{root / 'key.pem'}"
        for sub in ("run", "state", "home"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        clients = max(1000, mailboxes * 2 + 500)
        (root / "dovecot.conf").write_text(
            DOVECOT_CONF.format(
                root=root,
                port=self.port,
                hibernate=hibernate,
                ssl=ssl,
                tls_port=self.tls_port,
                clients=clients,
                anvil=clients + 4096 * 2,
            )
        )
        os.chmod(root / "home", 0o1777)  # noqa: S103 (each uid makes its own home there)
        self.binary = shutil.which("dovecot") or "/usr/sbin/dovecot"

    def users(self, count: int) -> list[str]:
        names = [f"idle{n:05d}" for n in range(count)]
        home = self.root / "home"
        lines = []
        for n, name in enumerate(names):
            uid = FIRST_UID + n // USERS_PER_UID if os.geteuid() == 0 else os.getuid()
            gid = uid if os.geteuid() == 0 else os.getgid()
            lines.append(f"{name}:{{PLAIN}}{PASSWORD}:{uid}:{gid}::{home}/{name}::\n")
        (self.root / "passwd").write_text("".join(lines))
        return names

    def start(self) -> None:
        subprocess.run(
            [
                "sh",
                "-c",
                f'ulimit -n $(ulimit -Hn); exec "{self.binary}" -c "{self.root}/dovecot.conf"',
            ],
            check=True,
        )
        wait_port(self.port, "the bench's Dovecot")

    def stop(self) -> None:
        """Stop, and wait until its last session is gone: the old imap-hibernate processes
        close 10,000 sessions over about a minute, and a new instance started meanwhile on the
        same base_dir fails its logins."""
        subprocess.run([self.binary, "-c", str(self.root / "dovecot.conf"), "stop"], check=False)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and (
            _port_open(self.port) or _server_sockets(self.port, self.tls_port)
        ):
            time.sleep(0.1)

    def processes(self) -> dict[str, int]:
        """Dovecot's processes by name, and their RSS in MB."""
        counts: dict[str, int] = {}
        rss = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if f"bench-idle-{self.port}".encode() not in cmdline and b"dovecot/" not in cmdline:
                continue
            stats = process_stats(int(entry))
            name = stats.name if stats else "?"
            counts[name] = counts.get(name, 0) + 1
            rss += stats.rss_kb if stats else 0
        counts["rss_mb"] = rss // 1024
        return counts


def _server_sockets(*ports: int) -> int:
    """Established TCP connections whose local port is one of PORTS (the server's side)."""
    wanted = {f"{port:04X}" for port in ports if port}
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "01" and fields[1].rsplit(":", 1)[1] in wanted:
                count += 1
    return count


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# A minimal IDLE client of the bench's own: the server's notice, timed ------------------------
class Watcher:
    def __init__(self, port: int, user: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.file = self.sock.makefile("rb")
        self.file.readline()
        self._do(f"a LOGIN {user} {PASSWORD}")
        self._do("b EXAMINE INBOX")
        self.sock.sendall(b"c IDLE\r\n")
        while not self.file.readline().startswith(b"+"):
            pass

    def _do(self, command: str) -> None:
        tag = command.split()[0].encode()
        self.sock.sendall(command.encode() + b"\r\n")
        while not (line := self.file.readline()).startswith(tag + b" "):
            if not line:
                raise ConnectionError("closed")
        if not line.startswith(tag + b" OK"):
            raise RuntimeError(line)

    def wait_exists(self, timeout: float = 30) -> float:
        self.sock.settimeout(timeout)
        while b"EXISTS" not in (line := self.file.readline()):
            if not line:
                raise ConnectionError("closed")
        return time.monotonic()

    def close(self) -> None:
        self.sock.close()


def append(port: int, user: str, subject: str) -> float:
    """APPEND one message to USER's INBOX; the time its tagged OK came."""
    body = (
        f"From: a@example.com\r\nTo: {user}@example.com\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@bench>\r\n\r\nhello\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        file = sock.makefile("rb")
        file.readline()
        sock.sendall(f"a LOGIN {user} {PASSWORD}\r\n".encode())
        while not file.readline().startswith(b"a "):
            pass
        sock.sendall(f"b APPEND INBOX {{{len(body)}}}\r\n".encode())
        file.readline()
        sock.sendall(body + b"\r\n")
        while not (line := file.readline()).startswith(b"b "):
            pass
        done = time.monotonic()
        if not line.startswith(b"b OK"):
            raise RuntimeError(line)
        sock.sendall(b"c LOGOUT\r\n")
    return done


# The database ----------------------------------------------------------------------------------
def accounts_create(users: list[str], port: int, security: str) -> dict[str, int]:
    owner, _ = get_user_model().objects.get_or_create(username=BENCH_USERNAME)
    Account.objects.filter(owner=owner).delete()
    credentials = encrypt_json({"password": PASSWORD})
    accounts = Account.objects.bulk_create(
        [
            Account(
                owner=owner,
                provider=Account.Provider.IMAP,
                email_address=f"{user}@example.com",
                credentials_encrypted=credentials,
            )
            for user in users
        ],
        batch_size=2000,
    )
    ImapSettings.objects.bulk_create(
        [
            ImapSettings(
                account=account,
                imap_host="127.0.0.1",
                imap_port=port,
                imap_security=security,
                username=user,
                capabilities=CAPABILITIES,
                allow_internal=True,
            )
            for account, user in zip(accounts, users, strict=True)
        ],
        batch_size=2000,
    )
    return {user: account.pk for account, user in zip(accounts, users, strict=True)}


def connections_of(pid: int) -> int:
    """Database connections opened by PID (pg_stat_activity knows the client's port only:
    matched against PID's TCP sockets, or all client backends when on a Unix socket)."""
    ports = _tcp_ports(pid)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT client_port FROM pg_stat_activity WHERE backend_type = 'client backend'"
            " AND pid <> pg_backend_pid()"
        )
        rows = [port for (port,) in cursor.fetchall()]
    if all(port in (None, -1) for port in rows):
        return len(rows)
    return sum(1 for port in rows if port in ports)


def _tcp_ports(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return set()
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


# The listener ----------------------------------------------------------------------------------
class Listener:
    def __init__(self, stats_file: Path, args: argparse.Namespace, dovecot: Dovecot) -> None:
        self.stats_file = stats_file
        command = [
            sys.executable,
            str(ROOT / "manage.py"),
            "imap_idle",
            "--stats-file",
            str(stats_file),
            "--connect-rate",
            str(args.connect_rate),
            "--reconnect-jitter",
            str(args.jitter),
        ]
        if not args.notify:
            command.append("--no-notify")
        self.log = open(stats_file.with_suffix(".log"), "w")  # noqa: SIM115
        self.process = subprocess.Popen(
            ["sh", "-c", 'ulimit -n $(ulimit -Hn); exec "$@"', "sh", *command],
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "OUTBOUND_ALLOWED_NETWORKS": _allowed(dovecot.port),
                **({"SSL_CERT_FILE": str(dovecot.cert)} if dovecot.tls_port else {}),
            },
        )
        self.pid = self.process.pid

    def stats(self) -> dict:
        try:
            return json.loads(self.stats_file.read_text())
        except (OSError, ValueError):
            return {}

    def rss_kb(self) -> int:
        stats = process_stats(self.pid)
        return stats.rss_kb if stats else 0

    def cpu(self) -> float:
        stats = process_stats(self.pid)
        return stats.cpu_seconds if stats else 0.0

    def wait_held(self, count: int, timeout: float, *, sample=None) -> float:
        """Seconds until COUNT are held; exits when nothing moves (no connect, no change of
        the held count) for a minute."""
        started = progress_at = time.monotonic()
        last = None
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise SystemExit(f"the listener exited ({self.process.returncode})")
            stats = self.stats()
            if stats.get("held", 0) >= count:
                return time.monotonic() - started
            now = (stats.get("held"), stats.get("connects"))
            if now != last:
                last, progress_at = now, time.monotonic()
            elif time.monotonic() - progress_at > 60:
                raise SystemExit(f"stalled at {now[0]} of {count} held: {stats}")
            if sample:
                sample()
            time.sleep(0.2)
        raise SystemExit(f"only {self.stats().get('held')} of {count} held after {timeout:.0f}s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()


def _allowed(port: int) -> str:
    given = os.environ.get("OUTBOUND_ALLOWED_NETWORKS", "")
    return ",".join(v for v in (given, f"127.0.0.1:{port}") if v)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def task_account(raw: bytes) -> int | None:
    message = json.loads(raw)
    argsrepr = message.get("headers", {}).get("argsrepr", "")
    digits = argsrepr.strip("[(").split(",", 1)[0]
    return int(digits) if digits.isdigit() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mailboxes", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--connect-rate", type=float, default=100.0)
    parser.add_argument("--jitter", type=float, default=10.0)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--hibernate", type=int, default=1, help="imap_hibernate_timeout (s)")
    parser.add_argument("--notify", action="store_true", help="let the listener set NOTIFY")
    parser.add_argument("--tls", action="store_true", help="the listener over implicit TLS")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and accounts")
    args = parser.parse_args()

    call_command("migrate", verbosity=0)
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    root = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    os.chmod(root, 0o755)  # noqa: S103 (Dovecot's unprivileged processes read it)
    dovecot = Dovecot(root, args.mailboxes, args.hibernate, args.tls)
    users = dovecot.users(args.mailboxes)
    dovecot.start()
    listener: Listener | None = None
    over = "TLS" if args.tls else "plain IMAP"
    print(f"IDLE scale: {args.mailboxes} mailboxes over {over}, one listener, Dovecot {root}")
    print(f"  before: {load_line()}")
    try:
        # The listener starts with nothing to hold: its baseline.
        listener = Listener(root / "listener.json", args, dovecot)
        while not listener.stats().get("refreshes"):
            time.sleep(0.2)
        time.sleep(1.0)
        baseline_kb = listener.rss_kb()
        log(f"listener up, baseline RSS {baseline_kb / 1024:.1f} MB; creating accounts")
        started = time.monotonic()
        if args.tls:
            ids = accounts_create(users, dovecot.tls_port, "ssl")
        else:
            ids = accounts_create(users, dovecot.port, "none")
        log(f"{len(ids)} accounts in {time.monotonic() - started:.1f}s")
        broker.delete(topics.QUEUE_SMTP)
        connection.close()

        peak_db = 0

        def sample_db() -> None:
            nonlocal peak_db
            peak_db = max(peak_db, connections_of(listener.pid))

        syncstate.client().publish(CHANNEL, b"refresh")  # as account_create's nudge does
        held_in = listener.wait_held(args.mailboxes, 3600, sample=sample_db)
        log(f"all held in {held_in:.1f}s; waiting for the catch-up triggers and hibernation")
        time.sleep(max(5.0, args.hibernate + 3.0))

        rss_kb = listener.rss_kb()
        db_idle = connections_of(listener.pid)
        cpu_before, wall = listener.cpu(), time.monotonic()
        busy = machine_busy(args.idle_seconds)
        idle_cpu = (listener.cpu() - cpu_before) / (time.monotonic() - wall)
        dovecot_procs = dovecot.processes()

        # APPEND -> trigger, beside the server's own notice.
        samples = random.sample(users, min(args.samples, len(users)))
        watchers = {}
        for (
            user
        ) in samples:  # spread out: an imap process holds an inotify instance till it hibernates
            watchers[user] = Watcher(dovecot.port, user)
            time.sleep(0.05)
        time.sleep(args.hibernate + 1.0)  # they hibernate like the listener's sessions
        broker.delete(topics.QUEUE_SMTP)
        server_part, total, beyond = [], [], []
        for n, user in enumerate(samples):
            account_id = ids[user]
            syncstate.forget_account(account_id)
            for route in ("incremental", "full"):
                syncstate.client().delete(syncstate.queued_key(account_id, route))
            noticed_at: list[float] = []
            reader = threading.Thread(
                target=lambda w=watchers[user], out=noticed_at: out.append(w.wait_exists())
            )
            reader.start()
            done = append(dovecot.port, user, f"s{n}-{random.getrandbits(32):x}")
            deadline = time.monotonic() + 30
            seen = None
            while seen is None and time.monotonic() < deadline:
                item = broker.brpop(topics.QUEUE_SMTP, timeout=1)
                if item and task_account(item[1]) == account_id:
                    seen = time.monotonic()
            if seen is None:
                raise SystemExit(f"no trigger for {user} within 30 s")
            reader.join(30)
            if not noticed_at:
                raise SystemExit(f"the bench's own IDLE on {user} heard nothing")
            noticed = noticed_at[0]
            server_part.append((noticed - done) * 1000)
            total.append((seen - done) * 1000)
            beyond.append((seen - noticed) * 1000)
        for watcher in watchers.values():
            watcher.close()

        # Re-hold after a server restart.
        before_restart = listener.stats().get("connects", 0)
        restarted = time.monotonic()
        dovecot.stop()
        dovecot.start()
        restart_s = time.monotonic() - restarted
        rehold = listener.wait_held(args.mailboxes, 3600) + restart_s
        reconnects = listener.stats().get("connects", 0) - before_restart

        stats = listener.stats()
        print(
            f"  listener: pid {listener.pid}, {stats.get('held')} held, notify sessions "
            f"{stats.get('notify')}, connect rate {args.connect_rate:g}/s per server, "
            f"jitter {args.jitter:g}s"
        )
        print(f"  connect-all: {held_in:.1f}s for {args.mailboxes} mailboxes")
        print(
            f"  RSS: {rss_kb / 1024:.1f} MB = {rss_kb / args.mailboxes:.1f} KB per mailbox; "
            f"above the baseline of {baseline_kb / 1024:.1f} MB: "
            f"{(rss_kb - baseline_kb) / args.mailboxes:.1f} KB per mailbox"
        )
        print(f"  database connections of the listener: peak {peak_db}, idle {db_idle}")
        print(
            f"  idle CPU: {idle_cpu * 100:.2f}% of a core over {args.idle_seconds:g}s "
            f"(the machine: {busy:.2f} of {os.cpu_count()} cores busy meanwhile)"
        )
        print(f"  Dovecot while held: {dovecot_procs}")
        print(
            f"  APPEND -> trigger ({len(total)} random mailboxes): "
            f"p50 {statistics.median(total):.0f} ms, p95 {pct(total, 0.95):.0f} ms; "
            f"server's notice p50 {statistics.median(server_part):.0f} ms, "
            f"p95 {pct(server_part, 0.95):.0f} ms; beyond the notice p50 "
            f"{statistics.median(beyond):.1f} ms, p95 {pct(beyond, 0.95):.1f} ms"
        )
        print(
            f"  re-hold after a Dovecot restart ({restart_s:.1f}s to restart): "
            f"{rehold:.1f}s, {reconnects} connects"
        )
        print(f"  after: {load_line()}")
    finally:
        if listener is not None:
            listener.stop()
        dovecot.stop()
        if not args.keep:
            get_user_model().objects.filter(username=BENCH_USERNAME).delete()
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"  kept {root}")


if __name__ == "__main__":
    main()
