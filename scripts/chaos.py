#!/usr/bin/env python3
"""The chaos suite (`make chaos`): the platform's real processes under faults, as an operator
would see them, and whether the store comes back to what the server holds without anyone
touching it.

    make chaos                                        every scenario, CI-sized mailbox
    make chaos CHAOS_ARGS="--messages 6000 --scenarios worker-kill,redis-restart"
    python scripts/chaos.py --help                    (under `scripts/devservices.py exec`)

Per scenario, from scratch: a fresh store (the platform's tables truncated, Redis flushed, an
empty MEDIA_ROOT), a fresh Dovecot user whose mailbox (3 folders) is written straight into its
maildir, the platform started with `scripts/run_platform.py` (web, sync worker, message worker,
beat, imap-idle) with production settings (DEBUG off, the production visibility timeout, lock
TTL, lease and restore interval: only the mailbox is small), the account added with
`manage.py add_account` (which tests the connection and publishes the first full sync). Then the
fault, then polling until the store equals the server or the time is up.

Beat's IMAP poll and periodic full sync are disabled (django-celery-beat `enabled=False`, nothing
else): what converges does so with no poll and no manual trigger. Other beat jobs (a watchdog,
a sweeper) stay on.

The check, against a direct IMAP session: the same folders; per folder the same UIDs, each with
the same system flags and the same bytes (sha256 of the server's BODY[] against the stored
raw's recorded sha256 while polling, then against the stored bytes themselves, decompressed);
one message row per distinct message (no duplicates); no message without a location or raw
bytes, no empty thread; every referenced file present. After convergence, a few seconds later:
no sync run left "running", no file in MEDIA_ROOT that no row names, every platform process alive.

While a scenario runs, a watcher thread samples the account's batch rows and stored count: each
fault's time until the store holds mail published after it ("resumed": more than was stored
and in flight at the fault) and, for a killed message worker, until the batches it held are
stored; and two sync passes of the account publishing at once (their
publisher ids' batch ranges interleave) is a failure in every scenario.

Target: converged within --target seconds (120) of the fault's end, --worker-target (90) for the
worker kills, which must also resume within it after each kill. Exits 1 if a scenario misses
it. The table is printed in Markdown.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PY = sys.executable
DEVSERVICES = [PY, str(ROOT / "scripts" / "devservices.py")]

SCENARIOS = (
    "worker-kill",
    "message-worker-kill",
    "redis-restart",
    "postgres-restart",
    "imap-cut",
    "password-change",
    "concurrent-triggers",
    "server-changes",
)
FOLDERS = (("INBOX", 0.5), ("Archive", 0.3), ("Sent", 0.2))
SYSTEM_FLAGS = frozenset({"\\Seen", "\\Flagged", "\\Answered", "\\Draft"})
MAILDIR_FLAGS = {"S": "\\Seen", "F": "\\Flagged", "R": "\\Answered", "D": "\\Draft"}
# Settings that must keep their production values: the suite refuses to shorten them.
PRODUCTION_SETTINGS = (
    "CELERY_VISIBILITY_TIMEOUT",
    "CELERY_UNACKED_RESTORE_INTERVAL",
    "CELERY_UNACKED_RESTORE_THROTTLE",
    "SYNC_LOCK_TTL_SECONDS",
    "INGEST_LEASE_SECONDS",
    "INGEST_QUEUE_TIMEOUT_SECONDS",
    "IMAP_FETCH_BATCH",
    "FULL_SYNC_INTERVAL_MINUTES",
)
POLL_JOBS = ("smtp_sync.poll_accounts", "messages.schedule_full_syncs")


def log(text: str) -> None:
    stamp = datetime.now(UTC).strftime("%H:%M:%S")
    print(f"[{stamp}] {text}", file=sys.stderr, flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated, in order (default: all): {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--messages", type=int, default=3000, help="mailbox size (3 folders)")
    parser.add_argument("--kills", type=int, default=10, help="worker-kill: kill -9 count")
    parser.add_argument(
        "--message-kills", type=int, default=6, help="message-worker-kill: kill -9 count"
    )
    parser.add_argument(
        "--kill-target",
        choices=["mixed", "child", "main"],
        default="mixed",
        help="worker-kill: the pool child running tasks, the main worker process, or both "
        "alternately (default)",
    )
    parser.add_argument(
        "--kill-gap",
        type=float,
        default=6.0,
        help="worker-kill: at most this many seconds "
        "between a worker being back and the next kill (random)",
    )
    parser.add_argument("--restarts", type=int, default=2, help="Redis/PostgreSQL restarts")
    parser.add_argument("--down", type=float, default=3.0, help="seconds a service stays down")
    parser.add_argument("--cuts", type=int, default=2, help="imap-cut: session cuts")
    parser.add_argument(
        "--auth-down", type=float, default=20.0, help="password-change: seconds before restore"
    )
    parser.add_argument("--triggers", type=int, default=10, help="concurrent triggers (half full)")
    parser.add_argument("--target", type=float, default=120.0, help="seconds after the fault")
    parser.add_argument(
        "--worker-target",
        type=float,
        default=90.0,
        help="the worker kills' target, to converge and, after each kill, to resume",
    )
    parser.add_argument(
        "--margin", type=float, default=30.0, help="keep polling this long past the target"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: time)")
    parser.add_argument("--logs", type=Path, default=None, help="keep platform logs here")
    parser.add_argument("--json", type=Path, default=None, help="also write results as JSON")
    return parser.parse_args()


ARGS = parse_args()

# The platform's production settings: DEBUG off, nothing shortened.
os.environ["DEBUG"] = "0"
os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1,localhost")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emailplatform.settings")
for _name in PRODUCTION_SETTINGS:
    if os.environ.pop(_name, None) is not None:
        log(f"ignoring {_name} from the environment: the suite runs production values")
for _name in ("SERVICES_DIR", "IMAP_TEST_PORT", "DOVECOT_USERS_DIR", "DOVECOT_HOME"):
    if not os.environ.get(_name):
        raise SystemExit(
            f"{_name} is not set: run under `scripts/devservices.py exec --temp --durable --` "
            "(make chaos), which starts private PostgreSQL, Redis and Dovecot"
        )

import django  # noqa: E402

django.setup()

import redis  # noqa: E402
from django.apps import apps  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.files.storage import default_storage  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import DatabaseError, connection, connections  # noqa: E402
from django.db.models import Count  # noqa: E402
from imapclient import IMAPClient  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "scripts"))
from chaos_checks import ROLES, WORKER_ROLES, PassOverlap, role_of  # noqa: E402
from imap_sync import BASE_TIMESTAMP, MailMaker  # noqa: E402

from emailplatform import syncstate  # noqa: E402
from messages.batch_store import lease_key  # noqa: E402
from messages.models import (  # noqa: E402
    Account,
    Attachment,
    Folder,
    IngestBatch,
    Message,
    MessageLocation,
    RawMessage,
    SyncRun,
    Thread,
)
from messages.services import account_sync_request  # noqa: E402

SERVICES_DIR = Path(os.environ["SERVICES_DIR"])
IMAP_HOST = os.environ.get("IMAP_TEST_HOST", "127.0.0.1")
IMAP_PORT = int(os.environ["IMAP_TEST_PORT"])
USERS_DIR = Path(os.environ["DOVECOT_USERS_DIR"])
HOMES_DIR = Path(os.environ["DOVECOT_HOME"])
MEDIA_ROOT = Path(settings.MEDIA_ROOT)
RNG = random.Random(ARGS.seed if ARGS.seed is not None else time.time_ns())


# Services (devservices.py owns how they run) -------------------------------------------------


def devservices(*args: str) -> str:
    done = subprocess.run(
        [*DEVSERVICES, *args, "--dir", str(SERVICES_DIR)],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The mailbox --------------------------------------------------------------------------------


@dataclass
class MailUser:
    username: str
    password: str

    @property
    def home(self) -> Path:
        return HOMES_DIR / self.username

    @property
    def email(self) -> str:
        return f"{self.username}@example.com"

    def client(self) -> IMAPClient:
        client = IMAPClient(IMAP_HOST, port=IMAP_PORT, ssl=False, timeout=60)
        client.login(self.username, self.password)
        return client

    def set_password(self, password: str) -> None:
        """Edit the user's passwd-file entry, as a mail admin changing the password would."""
        (USERS_DIR / self.username).write_text(f"{self.username}:{{PLAIN}}{password}\n")

    def remove(self) -> None:
        (USERS_DIR / self.username).unlink(missing_ok=True)
        shutil.rmtree(self.home, ignore_errors=True)


def mail_user_create() -> MailUser:
    user = MailUser(f"chaos{uuid.uuid4().hex[:10]}", uuid.uuid4().hex)
    user.set_password(user.password)
    return user


def mailbox_seed(user: MailUser, count: int) -> None:
    """COUNT realistic messages (bench/imap_sync.py's generated mix) written as maildir files
    into three folders; Dovecot indexes them on the first SELECT. Not the corpus: several of its
    messages share a Message-ID, so the store rightly keeps them as one message in two places,
    whose flags could then not match both copies' and the check would blame the platform."""
    owner = HOMES_DIR.stat()
    maker = MailMaker(user.username, ())
    maildir = user.home / "Maildir"
    seq = 0
    for name, share in FOLDERS:
        box = maildir if name == "INBOX" else maildir / f".{name}"
        for sub in ("", "cur", "new", "tmp"):
            path = box / sub if sub else box
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        n = round(count * share) if name != FOLDERS[-1][0] else count - seq
        for _ in range(n):
            ts = BASE_TIMESTAMP + seq * 300 + (seq * 7919) % 240
            mail = maker.message(seq, ts)
            size = len(mail.raw)
            vsize = f",W={size}" if mail.crlf_only else ""
            path = (
                box / "cur" / f"{ts}.M{seq:06d}P{os.getpid()}.chaos,S={size}{vsize}:2,{mail.flags}"
            )
            path.write_bytes(mail.raw)
            os.utime(path, (ts, ts))
            seq += 1
    for dirpath, _dirs, files in os.walk(user.home):
        os.chown(dirpath, owner.st_uid, owner.st_gid)
        for f in files:
            os.chown(os.path.join(dirpath, f), owner.st_uid, owner.st_gid)


class ServerView:
    """The server's truth through a direct IMAP session: {folder: {uid: (sha256, flags)}}.

    A (folder, UIDVALIDITY, UID) names immutable bytes, so each message's body is fetched once
    and only flags are re-read on every poll."""

    def __init__(self, user: MailUser) -> None:
        self.user = user
        self.shas: dict[tuple[str, int, int], str] = {}

    def state(self) -> dict[str, dict[int, tuple[str, frozenset[str]]]]:
        state: dict[str, dict[int, tuple[str, frozenset[str]]]] = {}
        with self.user.client() as c:
            for flags, _delim, name in c.list_folders():
                if b"\\Noselect" in flags or b"\\NonExistent" in flags:
                    state[name] = {}
                    continue
                info = c.select_folder(name, readonly=True)
                validity = int(info[b"UIDVALIDITY"])
                uids = c.search(["ALL"])
                current: dict[int, frozenset[str]] = {}
                for k in range(0, len(uids), 2000):
                    for uid, data in c.fetch(uids[k : k + 2000], ["FLAGS"]).items():
                        current[uid] = frozenset(f.decode() for f in data[b"FLAGS"]) & SYSTEM_FLAGS
                missing = [u for u in current if (name, validity, u) not in self.shas]
                for k in range(0, len(missing), 200):
                    for uid, data in c.fetch(missing[k : k + 200], ["BODY.PEEK[]"]).items():
                        body = data[b"BODY[]"]
                        self.shas[(name, validity, uid)] = hashlib.sha256(body).hexdigest()
                state[name] = {
                    uid: (self.shas[(name, validity, uid)], flags)
                    for uid, flags in current.items()
                    if (name, validity, uid) in self.shas
                }
        return state


# The store ----------------------------------------------------------------------------------


def store_reset() -> None:
    """A fresh store: every table of the platform's apps emptied (ids restarted), Redis flushed,
    MEDIA_ROOT emptied. Django's own tables and beat's schedule stay."""
    tables = [
        model._meta.db_table
        for label in ("mailstore", "smtp_sync", "gmail_sync")
        if label in {a.label for a in apps.get_app_configs()}
        for model in apps.get_app_config(label).get_models()
        if model._meta.managed and not model._meta.proxy
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"
        )
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushall()
    if MEDIA_ROOT.exists():
        shutil.rmtree(MEDIA_ROOT)
    MEDIA_ROOT.mkdir(parents=True)


def polls_disable() -> list[str]:
    """Turn off beat's IMAP poll and periodic full sync; return the jobs left on."""
    from django_celery_beat.models import PeriodicTask

    PeriodicTask.objects.filter(task__in=POLL_JOBS).update(enabled=False)
    from django_celery_beat.models import PeriodicTasks

    PeriodicTasks.update_changed()
    return list(
        PeriodicTask.objects.filter(enabled=True)
        .exclude(task="celery.backend_cleanup")
        .values_list("name", flat=True)
    )


def store_state(account_id: int) -> tuple[dict, int, int]:
    """({folder: {uid: (recorded sha256, flags)}}, locations without a UID, doubled locations)."""
    state: dict[str, dict[int, tuple[str, frozenset[str]]]] = {
        name: {}
        for name in Folder.objects.filter(account_id=account_id).values_list("name", flat=True)
    }
    rows = MessageLocation.objects.filter(message__account_id=account_id).values_list(
        "folder__name",
        "uid",
        "message__is_read",
        "message__is_flagged",
        "message__is_answered",
        "message__is_draft",
        "message__raw__sha256",
    )
    no_uid = doubled = 0
    for folder, uid, seen, flagged, answered, draft, sha in rows:
        if uid is None:
            no_uid += 1
            continue
        flags = frozenset(
            f
            for f, on in (
                ("\\Seen", seen),
                ("\\Flagged", flagged),
                ("\\Answered", answered),
                ("\\Draft", draft),
            )
            if on
        )
        box = state.setdefault(folder, {})
        if uid in box:
            doubled += 1
        box[uid] = (sha or "", flags)
    return state, no_uid, doubled


@dataclass
class Check:
    ok: bool
    problems: list[str]
    stored: int = 0
    expected: int = 0


def compare(account_id: int, server: dict) -> Check:
    """Store against server, from the rows (cheap: run on every poll)."""
    store, no_uid, doubled = store_state(account_id)
    problems: list[str] = []
    if set(store) != set(server):
        problems.append(
            f"folders: missing {sorted(set(server) - set(store))}, extra "
            f"{sorted(set(store) - set(server))}"
        )
    missing = extra = wrong_bytes = wrong_flags = 0
    for name, uids in server.items():
        mine = store.get(name, {})
        missing += len(uids.keys() - mine.keys())
        extra += len(mine.keys() - uids.keys())
        for uid in uids.keys() & mine.keys():
            wrong_bytes += uids[uid][0] != mine[uid][0]
            wrong_flags += uids[uid][1] != mine[uid][1]
    for count, what in (
        (missing, "missing"),
        (extra, "extra (gone from the server)"),
        (wrong_bytes, "with other bytes"),
        (wrong_flags, "with other flags"),
        (no_uid, "locations without a UID"),
        (doubled, "doubled locations"),
    ):
        if count:
            problems.append(f"{count} {what}")
    distinct = {sha for uids in server.values() for sha, _ in uids.values()}
    messages = Message.objects.filter(account_id=account_id)
    rows = messages.count()
    if rows > len(distinct):
        problems.append(f"{rows - len(distinct)} duplicate message rows")
    orphans = messages.filter(locations__isnull=True).count()
    if orphans:
        problems.append(f"{orphans} messages in no folder")
    no_raw = messages.filter(raw__isnull=True).count()
    if no_raw:
        problems.append(f"{no_raw} messages without raw bytes")
    empty = (
        Thread.objects.filter(account_id=account_id)
        .annotate(n=Count("messages"))
        .filter(n=0)
        .count()
    )
    if empty:
        problems.append(f"{empty} empty threads")
    stored = sum(len(v) for v in store.values())
    expected = sum(len(v) for v in server.values())
    return Check(not problems, problems, stored, expected)


def deep_check(account_id: int, server: dict) -> list[str]:
    """The stored bytes themselves (decompressed from MEDIA_ROOT) against the server's, and
    every file a row names present."""
    by_location = {
        (name, uid): sha for name, uids in server.items() for uid, (sha, _) in uids.items()
    }
    problems: list[str] = []
    bad = missing_files = 0
    raws = RawMessage.objects.filter(message__account_id=account_id).select_related("message")
    where = dict(
        MessageLocation.objects.filter(message__account_id=account_id).values_list(
            "message_id", "folder__name"
        )
    )
    uid_of = dict(
        MessageLocation.objects.filter(message__account_id=account_id).values_list(
            "message_id", "uid"
        )
    )
    for raw in raws.iterator(chunk_size=500):
        try:
            sha = hashlib.sha256(raw.content()).hexdigest()
        except (OSError, ValueError) as exc:
            missing_files += 1
            if missing_files == 1:
                problems.append(f"raw bytes unreadable ({type(exc).__name__}: {exc})")
            continue
        expected = by_location.get((where.get(raw.message_id), uid_of.get(raw.message_id)))
        if sha != expected or sha != raw.sha256:
            bad += 1
    if bad:
        problems.append(f"{bad} messages whose stored bytes differ from the server's")
    for name in (
        Attachment.objects.filter(message__account_id=account_id)
        .exclude(file="")
        .values_list("file", flat=True)
    ):
        if not default_storage.exists(name):
            missing_files += 1
    if missing_files:
        problems.append(f"{missing_files} referenced files missing")
    return problems


def orphan_files() -> list[str]:
    """Files in MEDIA_ROOT that no row names (raw segments, attachments, staged blobs)."""
    named = set(RawMessage.objects.exclude(file="").values_list("file", flat=True))
    named |= set(Attachment.objects.exclude(file="").values_list("file", flat=True))
    found = []
    for dirpath, _dirs, files in os.walk(MEDIA_ROOT):
        for f in files:
            rel = os.path.relpath(os.path.join(dirpath, f), MEDIA_ROOT)
            if rel not in named:
                found.append(rel)
    return found


def db_retry(fn: Callable, *args, **kwargs):
    """Run a read; a broken connection (PostgreSQL restarted) is dropped and None returned."""
    try:
        return fn(*args, **kwargs)
    except DatabaseError:
        connections.close_all()
        return None


# The store while a scenario runs ----------------------------------------------------------


@dataclass
class Fault:
    """One fault's moment, the store's size then, the size that means the pipeline moves again
    (GOAL: beyond everything published before the fault, or the whole mailbox), and the
    locations its victim held (batches claimed under a live lease: a message worker's work)."""

    label: str
    at: float
    stored: int
    goal: int
    held: dict[int, set[int]]
    resumed: float | None = None  # seconds until the store reached GOAL
    recovered: float | None = None  # seconds until every held location was stored

    def summary(self) -> str:
        parts = [f"resumed {_secs(self.resumed)}"]
        if self.held:
            parts.append(f"held batches stored {_secs(self.recovered)}")
        return f"{self.label}: " + ", ".join(parts)


def _secs(value: float | None) -> str:
    return "never" if value is None else f"{value:.0f}s"


class Watcher:
    """A thread that samples the account's store every 0.3 s while a scenario runs: its batch
    rows (each sync pass's publisher id, for the one-sync-at-a-time check) and the stored
    count, so that each fault's time to resume (`Fault.goal` reached) and to recover (what the
    victim held is stored) is measured outside the fault's own loop."""

    def __init__(self, account_id: int, total: int) -> None:
        self.account_id = account_id
        self.total = total
        self.overlap = PassOverlap()
        self.faults: list[Fault] = []
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def fault(self, label: str, stored: int, held: dict[int, set[int]] | None = None) -> None:
        """Note a fault now. Work has resumed once the store holds a message published after
        it: more than what was stored plus what was in flight at the fault."""
        at = time.monotonic()
        in_flight = db_retry(
            lambda: sum(
                len(uids)
                for uids in IngestBatch.objects.filter(
                    account_id=self.account_id, stored_at__isnull=True
                ).values_list("uids", flat=True)
            )
        )
        goal = min(self.total, stored + (in_flight or 0) + 1)
        with self._lock:
            self.faults.append(Fault(label, at, stored, goal, held or {}))

    def _run(self) -> None:
        try:
            while not self._stop.wait(0.3):
                try:
                    self._sample()
                except DatabaseError:
                    connection.close()
        finally:
            connection.close()

    def _sample(self) -> None:
        now = time.monotonic()
        rows = list(
            IngestBatch.objects.filter(account_id=self.account_id).values_list(
                "id", "publisher", "stored_at"
            )
        )
        self.overlap.feed((batch_id, publisher) for batch_id, publisher, _ in rows)
        self.max_in_flight = max(self.max_in_flight, sum(1 for r in rows if r[2] is None))
        stored = MessageLocation.objects.filter(
            message__account_id=self.account_id, uid__isnull=False
        ).count()
        with self._lock:
            faults = [f for f in self.faults if f.resumed is None or f.recovered is None]
        for fault in faults:
            if fault.resumed is None and stored >= fault.goal:
                fault.resumed = now - fault.at
            if fault.recovered is None and fault.held and self._all_stored(fault.held):
                fault.recovered = now - fault.at

    def _all_stored(self, held: dict[int, set[int]]) -> bool:
        for folder_id, uids in held.items():
            found = MessageLocation.objects.filter(folder_id=folder_id, uid__in=uids).count()
            if found < len(uids):
                return False
        return True


def batches_held(account_id: int) -> dict[int, set[int]]:
    """{folder id: UIDs} of the account's batches a live consumer holds: claimed, not stored,
    under a lease (not those of a consumer already dead, whose lease lapses)."""
    held: dict[int, set[int]] = {}
    rows = list(
        IngestBatch.objects.filter(
            account_id=account_id, claimed_at__isnull=False, stored_at__isnull=True
        ).values_list("id", "folder_id", "uids")
    )
    if not rows:
        return held
    leases = syncstate.client().mget([lease_key(batch_id) for batch_id, _, _ in rows])
    for (_id, folder_id, uids), lease in zip(rows, leases, strict=True):
        if folder_id is not None and lease is not None:
            held.setdefault(folder_id, set()).update(uids)
    return held


def batches_in_flight(account_id: int) -> int:
    return IngestBatch.objects.filter(account_id=account_id, stored_at__isnull=True).count()


# The platform's processes -------------------------------------------------------------------


def proc_table() -> dict[int, tuple[int, int, list[str]]]:
    """{pid: (ppid, session id, argv)} of every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        table[int(entry)] = (int(fields[1]), int(fields[3]), argv.rstrip("\0").split("\0"))
    return table


class Platform:
    """`scripts/run_platform.py` in its own session, output to a log file."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.sessions: list[int] = []
        self.suite_restarts = 0
        self.port = free_port()

    def env(self) -> dict[str, str]:
        return {**os.environ, "DEMO": "0", "DEBUG": "0", "PORT": str(self.port)}

    def start(self) -> None:
        out = self.log_path.open("ab")
        out.write(f"\n===== run_platform.py started {datetime.now(UTC):%H:%M:%S} =====\n".encode())
        out.flush()
        self.proc = subprocess.Popen(
            [PY, str(ROOT / "scripts" / "run_platform.py")],
            cwd=ROOT,
            env=self.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        self.sessions.append(self.proc.pid)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def processes(self) -> dict[int, tuple[int, list[str]]]:
        """{pid: (ppid, argv)} of this platform's processes (its sessions, orphans too)."""
        return {
            pid: (ppid, argv)
            for pid, (ppid, sid, argv) in proc_table().items()
            if sid in self.sessions and pid not in self.sessions
        }

    def roles(self) -> dict[str, list[int]]:
        """Role -> pids of the live processes doing it, run_platform.py's children (a worker:
        its main processes only, not the pool's)."""
        found: dict[str, list[int]] = {role: [] for role in ROLES}
        for pid, (ppid, argv) in self.processes().items():
            role = role_of(argv)
            if role is None or ppid not in self.sessions:
                continue  # a pool child, or one orphaned by its killed main process
            found[role].append(pid)
        return found

    def worker_main(self, role: str) -> int | None:
        mains = self.roles()[role]
        return max(mains) if mains else None

    def pool_children(self, main: int) -> list[int]:
        return [pid for pid, (ppid, _argv) in self.processes().items() if ppid == main]

    def ready_count(self, role: str | None = None) -> int:
        """Celery's "ready." lines in the log so far (of ROLE's node only, when given)."""
        try:
            lines = self.log_path.read_bytes().splitlines()
        except FileNotFoundError:
            return 0
        node = f" {role.removesuffix('-worker')}@".encode() if role else b""
        return sum(1 for line in lines if line.endswith(b" ready.") and node in line)

    def ready_counts(self) -> dict[str, int]:
        return {role: self.ready_count(role) for role in WORKER_ROLES}

    def wait_ready(self, before: dict[str, int], timeout: float = 120.0) -> bool:
        """Wait for each worker's "ready." beyond BEFORE and every role's process."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                return False
            ready = all(self.ready_count(role) > n for role, n in before.items())
            if ready and all(self.roles().values()):
                return True
            time.sleep(0.3)
        return False

    def supervise(self) -> None:
        """Play the service manager if run_platform.py itself exited: start it again."""
        if self.running():
            return
        log(f"  run_platform.py exited ({self.proc.returncode}): the suite restarts it")
        self.kill_leftovers()
        self.suite_restarts += 1
        before = self.ready_counts()
        self.start()
        self.wait_ready(before)

    def alive(self) -> tuple[bool, str]:
        if not self.running():
            return False, f"run_platform.py exited ({self.proc.returncode})"
        missing = [role for role, pids in self.roles().items() if not pids]
        return (not missing, "missing: " + ", ".join(missing) if missing else "all running")

    def kill_leftovers(self) -> None:
        for sid in self.sessions:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(sid, signal.SIGKILL)

    def stop(self) -> None:
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)
        self.kill_leftovers()
        deadline = time.monotonic() + 10
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.2)


# Scenarios ----------------------------------------------------------------------------------


@dataclass
class Result:
    scenario: str
    fault: str
    target: float
    converged_after: float | None = None
    mid_sync: bool | None = None
    alive: bool = False
    alive_note: str = ""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sync_runs: str = ""
    resumed: float | None = None  # the slowest resumption after a fault (seconds)

    @property
    def met(self) -> bool:
        return (
            self.converged_after is not None
            and self.converged_after <= self.target
            and self.alive
            and not self.problems
        )


_ADD_ACCOUNT_HELP: list[str] = []


def add_account_allows_internal(env: dict[str, str]) -> bool:
    """Whether this platform's add_account has --allow-internal (an outbound guard refusing
    loopback hosts unless the operator allows them)."""
    if not _ADD_ACCOUNT_HELP:
        done = subprocess.run(
            [PY, "manage.py", "add_account", "--help"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        _ADD_ACCOUNT_HELP.append(done.stdout)
    return "--allow-internal" in _ADD_ACCOUNT_HELP[0]


class Run:
    """One scenario's world: mailbox, platform, account."""

    def __init__(self, name: str, logs: Path) -> None:
        self.name = name
        self.user = mail_user_create()
        self.server = ServerView(self.user)
        self.platform = Platform(logs / f"{name}.log")
        self.account_id: int | None = None
        self.total = 0
        self.watcher: Watcher | None = None

    def prepare(self) -> None:
        store_reset()
        start = time.monotonic()
        mailbox_seed(self.user, ARGS.messages)
        state = self.server.state()  # Dovecot indexes the files; every body hashed once
        self.total = sum(len(v) for v in state.values())
        log(
            f"  mailbox: {self.total} messages in {len(FOLDERS)} folders, seeded and read back "
            f"in {time.monotonic() - start:.0f}s"
        )
        self.platform.start()
        if not self.platform.wait_ready(dict.fromkeys(WORKER_ROLES, 0)):
            raise RuntimeError(f"the platform did not start; see {self.platform.log_path}")
        log(f"  platform up (run_platform.py pid {self.platform.proc.pid})")

    def add_account(self, *, sync: bool = True) -> None:
        owner, _ = get_user_model().objects.get_or_create(username="chaos")
        cmd = [
            PY,
            "manage.py",
            "add_account",
            "--owner",
            owner.username,
            "--email",
            self.user.email,
            "--imap-host",
            IMAP_HOST,
            "--imap-port",
            str(IMAP_PORT),
            "--security",
            "none",
            "--username",
            self.user.username,
            "--password-env",
            "CHAOS_IMAP_PASSWORD",
        ]
        if not sync:
            cmd.append("--no-sync")
        env = {**self.platform.env(), "CHAOS_IMAP_PASSWORD": self.user.password}
        if add_account_allows_internal(env):
            cmd.append("--allow-internal")  # our Dovecot is on loopback, as an operator knows
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"add_account failed: {done.stderr.strip()[-2000:]}")
        self.account_id = Account.objects.get(email_address=self.user.email).pk
        self.watcher = Watcher(self.account_id, self.total)
        self.watcher.start()
        log(f"  account {self.account_id} added with manage.py add_account")

    def stored(self) -> int:
        count = db_retry(
            lambda: MessageLocation.objects.filter(
                message__account_id=self.account_id, uid__isnull=False
            ).count()
        )
        return count or 0

    def wait_stored(self, share: float, timeout: float = 300.0) -> bool:
        """Wait until SHARE of the mailbox is stored (the full sync is under way)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stored() >= share * self.total:
                return True
            self.platform.supervise()
            time.sleep(0.2)
        return False

    def converge(self, result: Result, fault_end: float) -> None:
        """Poll until the store equals the server, or target + margin has passed."""
        deadline = fault_end + result.target + ARGS.margin
        last: Check | None = None
        while True:
            now = time.monotonic()
            self.platform.supervise()
            try:
                server = self.server.state()
            except Exception as exc:  # noqa: BLE001  (the server is ours: report, go on)
                last = Check(False, [f"server unreadable: {exc}"])
                server = None
            if server is not None:
                check = db_retry(compare, self.account_id, server)
                if check is not None:
                    last = check
                if check is not None and check.ok:
                    deep = db_retry(deep_check, self.account_id, server)
                    if deep == []:
                        result.converged_after = max(0.0, now - fault_end)
                        return
                    if deep:
                        last = Check(False, deep, check.stored, check.expected)
            if time.monotonic() > deadline:
                result.problems = ["not converged: " + "; ".join(last.problems if last else [])]
                if last:
                    result.notes.append(f"stored {last.stored}/{last.expected} locations")
                return
            time.sleep(1.0)

    def finish(self, result: Result) -> None:
        """After convergence: runs left running, orphan files, processes. (Without convergence
        they are notes: the work may still be under way.)"""
        converged = result.converged_after is not None
        if converged:
            time.sleep(5)
        problems = result.problems if converged else result.notes
        running = db_retry(
            lambda: SyncRun.objects.filter(
                account_id=self.account_id, status=SyncRun.Status.RUNNING
            ).count()
        )
        if running:
            problems.append(f"{running} sync runs left 'running'")
        orphans = db_retry(orphan_files) or []
        grace = getattr(settings, "STORAGE_SWEEP_GRACE_SECONDS", None)
        if orphans and grace is None:
            problems.append(f"{len(orphans)} orphan files in MEDIA_ROOT (no sweeper)")
        elif orphans:
            # A sweeper removes files no row names once older than its grace: those younger
            # are its to remove later, not a leak; older ones it should have taken.
            now = time.time()
            ages = [now - (MEDIA_ROOT / name).stat().st_mtime for name in orphans]
            old = sum(age > grace for age in ages)
            if old:
                problems.append(f"{old} orphan files older than the sweeper's grace")
            if len(orphans) - old:
                result.notes.append(
                    f"{len(orphans) - old} orphan files left to the sweeper (grace {grace}s)"
                )
        runs = db_retry(
            lambda: dict(
                SyncRun.objects.filter(account_id=self.account_id)
                .values_list("kind")
                .annotate(n=Count("id"))
                .values_list("kind", "n")
            )
        )
        if runs is not None:
            result.sync_runs = ", ".join(f"{n} {kind}" for kind, n in sorted(runs.items()))
        status = db_retry(
            lambda: (
                Account.objects.filter(pk=self.account_id).values_list("status", flat=True).first()
            )
        )
        if status and status != Account.Status.ACTIVE:
            result.notes.append(f"account status {status}")
        result.alive, result.alive_note = self.platform.alive()
        if self.platform.suite_restarts:
            result.alive = False
            result.alive_note = (
                f"run_platform.py stopped everything {self.platform.suite_restarts}x; "
                "the suite restarted it"
            )

    def watched(self, result: Result) -> None:
        """What the watcher saw: each fault's time to resume, and two sync passes at once."""
        if self.watcher is None:
            return
        self.watcher.stop()
        faults = self.watcher.faults
        for fault in faults:
            if fault.stored >= self.total and fault.resumed is None:
                fault.resumed = 0.0  # nothing left to store: nothing to resume
        # What a killed message worker held is fetched again when the sync drains its folder
        # (messages.batches): reported, but the target is on the pipeline moving again.
        times = [f.resumed for f in faults]
        if faults:
            result.resumed = math.inf if None in times else max(times)
            result.notes.append("; ".join(f.summary() for f in faults))
            slow = [t for t in times if t is None or t > result.target]
            if self.name.endswith("worker-kill") and slow:
                result.problems.append(
                    f"{len(slow)} times work resumed later than {result.target:.0f}s after a kill"
                )
        passes = len(self.watcher.overlap.ranges)
        overlaps = self.watcher.overlap.overlaps()
        result.notes.append(
            f"{passes} sync passes seen publishing, at most {self.watcher.max_in_flight} "
            "batches in flight"
        )
        if overlaps:
            result.problems.append(f"two sync passes of the account at once ({len(overlaps)}x)")

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        self.platform.stop()
        self.user.remove()
        connections.close_all()


def scenario_worker_kill(role: str) -> Callable[[Run, Result], float]:
    """kill -9 of ROLE's worker (a pool child or its main process) at random moments of the
    full sync. A message worker is killed while it holds batches, and between kills the suite
    waits for the store to grow again (up to the target): its recovery is the lease's."""
    message = role == "message-worker"

    def scenario(run: Run, result: Result) -> float:
        run.add_account()
        run.wait_stored(0.05)
        mid = 0
        targets = {"child": ["child"], "main": ["main"], "mixed": ["child", "main"]}[
            ARGS.kill_target
        ]
        start_with = RNG.randrange(len(targets))
        kinds: list[str] = []
        last_kill = time.monotonic()
        patience = ARGS.worker_target if message else ARGS.kill_gap * 3
        for k in range(ARGS.message_kills if message else ARGS.kills):
            # A random moment while the sync makes progress: once the store grows again after
            # the last kill (at most PATIENCE seconds of waiting for it), then 0.2-2 s later;
            # a message worker once it holds a batch, too.
            seen = run.stored()
            deadline = time.monotonic() + patience
            while time.monotonic() < deadline and run.stored() in (seen,) and seen < run.total:
                run.platform.supervise()
                time.sleep(0.2)
            time.sleep(RNG.uniform(0.2, 2.0))
            if message:
                deadline = time.monotonic() + 10
                while not batches_held(run.account_id) and time.monotonic() < deadline:
                    time.sleep(0.1)
            run.platform.supervise()
            kind = targets[(start_with + k) % len(targets)]
            main = run.platform.worker_main(role)
            if main is None:
                run.platform.supervise()
                main = run.platform.worker_main(role)
            if main is None:
                result.notes.append(f"no {role} process to kill")
                break
            victim = main
            if kind == "child":
                children = run.platform.pool_children(main)
                if children:
                    victim = RNG.choice(children)
                else:
                    kind = "main"
            before_ready = run.platform.ready_count(role)
            stored = run.stored()
            held = batches_held(run.account_id) if message else {}
            mid += stored < run.total
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
            last_kill = time.monotonic()
            run.watcher.fault(f"kill #{k + 1} ({kind})", stored, held)
            kinds.append(kind)
            holding = f" stored, holding {sum(map(len, held.values()))}" if message else " stored"
            log(f"  kill -9 #{k + 1}: {role} {kind} {victim} ({stored}/{run.total}{holding})")
            if kind == "main":
                # Back when a supervisor (run_platform.py, or the suite standing in) restarted it.
                deadline = time.monotonic() + 90
                while time.monotonic() < deadline:
                    run.platform.supervise()
                    new = run.platform.worker_main(role)
                    if new and new != victim and run.platform.ready_count(role) > before_ready:
                        break
                    time.sleep(0.3)
                else:
                    result.notes.append(f"{role} not back 90s after kill #{k + 1}")
            else:
                time.sleep(1.0)
        result.mid_sync = mid > 0
        result.notes.append(
            f"{kinds.count('child')} pool-child + {kinds.count('main')} main kills, {mid} mid-sync"
        )
        return last_kill

    return scenario


def scenario_service_restart(service: str) -> Callable[[Run, Result], float]:
    def scenario(run: Run, result: Result) -> float:
        run.add_account()
        run.wait_stored(0.1)
        result.mid_sync = run.stored() < run.total
        end = time.monotonic()
        in_flight: list[int] = []
        for k in range(ARGS.restarts):
            if k:
                time.sleep(RNG.uniform(5, 12))
            # With batches on their way through email_new_message (published, not stored).
            # (a read through db_retry: the connection is a restarted PostgreSQL's victim too)
            deadline = time.monotonic() + 30
            while not db_retry(batches_in_flight, run.account_id) and time.monotonic() < deadline:
                time.sleep(0.1)
            in_flight.append(db_retry(batches_in_flight, run.account_id) or 0)
            stored = run.stored()
            log(
                f"  restart {service} #{k + 1} ({stored}/{run.total} stored, "
                f"{in_flight[-1]} batches in flight)"
            )
            if service == "postgres":
                connections.close_all()
            run.watcher.fault(f"restart #{k + 1}", stored)
            devservices("restart", service, "--down", str(ARGS.down))
            end = time.monotonic()
        result.notes.append(f"batches in flight at the restarts: {in_flight}")
        if not all(in_flight):
            result.problems.append("a restart came with no batch in flight (the sync was done)")
        return end

    return scenario


def scenario_imap_cut(run: Run, result: Result) -> float:
    run.add_account()
    run.wait_stored(0.1)
    result.mid_sync = run.stored() < run.total
    end = time.monotonic()
    for k in range(ARGS.cuts):
        if k:
            time.sleep(RNG.uniform(4, 10))
        run.watcher.fault(f"cut #{k + 1}", run.stored())
        out = devservices("kick", run.user.username)
        end = time.monotonic()
        log(f"  IMAP sessions cut #{k + 1} ({run.stored()}/{run.total} stored): {out[:80]}")
    return end


def scenario_password_change(run: Run, result: Result) -> float:
    run.add_account()
    run.wait_stored(0.1)
    result.mid_sync = run.stored() < run.total
    refused_before = logins_refused(run.user.username)
    changed = time.monotonic()
    run.watcher.fault("password changed", run.stored())
    run.user.set_password(uuid.uuid4().hex)
    devservices("kick", run.user.username)  # as a server does when a password changes
    log(f"  password changed on the server, sessions cut ({run.stored()}/{run.total} stored)")
    # Restored after --auth-down seconds, and not before the platform has tried the wrong
    # password at least once (else the fault went unseen), at most 3 minutes.
    time.sleep(ARGS.auth_down)
    while logins_refused(run.user.username) == refused_before and time.monotonic() < changed + 180:
        time.sleep(0.5)
    refused = logins_refused(run.user.username) - refused_before
    run.user.set_password(run.user.password)
    log(
        f"  password restored after {time.monotonic() - changed:.0f}s, "
        f"{refused} logins refused meanwhile"
    )
    result.notes.append(f"{refused} logins refused while changed")
    return time.monotonic()


def logins_refused(username: str) -> int:
    """Logins Dovecot refused for USERNAME so far (its log)."""
    try:
        text = (SERVICES_DIR / "dovecot" / "dovecot.log").read_text(errors="replace")
    except FileNotFoundError:
        return 0
    return sum(
        1 for line in text.splitlines() if "auth failed" in line and f"user=<{username}>" in line
    )


def scenario_concurrent_triggers(run: Run, result: Result) -> float:
    run.add_account(sync=False)
    account = Account.objects.get(pk=run.account_id)
    barrier = threading.Barrier(ARGS.triggers)
    errors: list[str] = []

    def trigger(full: bool) -> None:
        try:
            barrier.wait()
            account_sync_request(account=account, full=full)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            connection.close()

    threads = [
        threading.Thread(target=trigger, args=(k < ARGS.triggers // 2,))
        for k in range(ARGS.triggers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    end = time.monotonic()
    result.mid_sync = True
    log(f"  {ARGS.triggers} triggers sent at once ({ARGS.triggers // 2} full)")
    if errors:
        result.notes.append(f"trigger errors: {errors[:3]}")
    return end


def scenario_server_changes(run: Run, result: Result) -> float:
    """APPEND, EXPUNGE, MOVE and flag changes on the server while the full sync runs."""
    run.add_account()
    run.wait_stored(0.15)
    result.mid_sync = run.stored() < run.total
    maker = MailMaker(f"{run.user.username}-new", ())
    done = {"appended": 0, "expunged": 0, "moved": 0, "flagged": 0}
    with run.user.client() as c:
        for rnd in range(3):
            if rnd:
                time.sleep(2)
            for name, _share in FOLDERS:
                c.select_folder(name)
                uids = c.search(["ALL"])
                RNG.shuffle(uids)
                expunge, move, flag = uids[:10], uids[10:20], uids[20:70]
                if expunge:
                    c.delete_messages(expunge)
                    c.uid_expunge(expunge)
                    done["expunged"] += len(expunge)
                if move:
                    c.move(move, RNG.choice([f for f, _ in FOLDERS if f != name]))
                    done["moved"] += len(move)
                for k, uid in enumerate(flag):
                    flags = (
                        [b"\\Seen"]
                        if k % 3 == 0
                        else [b"\\Flagged"]
                        if k % 3 == 1
                        else [b"\\Answered"]
                    )
                    (c.add_flags if k % 2 else c.remove_flags)([uid], flags)
                done["flagged"] += len(flag)
                for k in range(10):
                    i = rnd * 100 + k + 1000 * FOLDERS.index((name, _share))
                    mail = maker.message(i, int(time.time()))
                    c.append(name, mail.raw, flags=[b"\\Seen"] if k % 2 else [])
                    done["appended"] += 1
            log(f"  server changes round {rnd + 1} ({run.stored()}/{run.total} stored)")
    result.notes.append(", ".join(f"{n} {k}" for k, n in done.items()))
    return time.monotonic()


SCENARIO_RUNNERS: dict[str, tuple[str, Callable[[Run, Result], float]]] = {
    "worker-kill": (
        "kill -9 of the sync worker, {kills}x at random moments",
        scenario_worker_kill("sync-worker"),
    ),
    "message-worker-kill": (
        "kill -9 of the message worker holding batches, {message_kills}x during the full sync",
        scenario_worker_kill("message-worker"),
    ),
    "redis-restart": ("Redis restarted {restarts}x mid-sync", scenario_service_restart("redis")),
    "postgres-restart": (
        "PostgreSQL restarted {restarts}x mid-sync",
        scenario_service_restart("postgres"),
    ),
    "imap-cut": ("IMAP sessions cut (doveadm kick) {cuts}x", scenario_imap_cut),
    "password-change": (
        "password changed on the server, restored once a login was refused (>= {auth_down:.0f}s)",
        scenario_password_change,
    ),
    "concurrent-triggers": (
        "{triggers} concurrent triggers (half full)",
        scenario_concurrent_triggers,
    ),
    "server-changes": (
        "server adds, expunges, moves, flag changes during the full sync",
        scenario_server_changes,
    ),
}


def run_scenario(name: str, logs: Path) -> Result:
    fault, runner = SCENARIO_RUNNERS[name]
    target = ARGS.worker_target if name.endswith("worker-kill") else ARGS.target
    result = Result(name, fault.format(**vars(ARGS)), target)
    log(f"== {name}: {result.fault}")
    run = Run(name, logs)
    try:
        run.prepare()
        fault_end = runner(run, result)
        log("  fault over: polling the store against the server")
        run.converge(result, fault_end)
        run.finish(result)
        run.watched(result)
    except Exception as exc:  # noqa: BLE001  (one scenario's breakage is its result)
        result.problems.append(f"suite error: {type(exc).__name__}: {exc}")
        with contextlib.suppress(Exception):
            result.alive, result.alive_note = run.platform.alive()
    finally:
        run.close()
    after = (
        f"{result.converged_after:.0f}s"
        if result.converged_after is not None
        else f"not within {result.target + ARGS.margin:.0f}s"
    )
    log(
        f"  {name}: converged after {after}; {'MET' if result.met else 'MISSED'}; "
        f"{'; '.join(result.problems + result.notes)}"
    )
    return result


def table(results: list[Result]) -> str:
    lines = [
        "| scenario | fault | mid-sync | resumed after fault (s, slowest) | "
        "converged after fault (s) | target (s) | met | processes alive | sync runs | notes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        after = (
            f"{r.converged_after:.0f}"
            if r.converged_after is not None
            else f"not within {r.target + ARGS.margin:.0f}"
        )
        mid = {True: "yes", False: "no", None: "-"}[r.mid_sync]
        alive = "yes" if r.alive else f"no ({r.alive_note})"
        notes = " ".join("; ".join(r.problems + r.notes).replace("|", "/").split())
        resumed = "-" if r.resumed is None else f"{r.resumed:.0f}".replace("inf", "never")
        lines.append(
            f"| {r.scenario} | {r.fault} | {mid} | {resumed} | {after} | {r.target:.0f} | "
            f"{'yes' if r.met else 'no'} | {alive} | {r.sync_runs} | {notes} |"
        )
    return "\n".join(lines)


def git_describe() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    branch = subprocess.run(
        ["git", "branch", "--show-current"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    return f"{branch.stdout.strip()}@{done.stdout.strip()}"


def interrupted(*_: object) -> None:
    raise KeyboardInterrupt  # SIGTERM as Ctrl-C: the running scenario stops its platform


def main() -> int:
    signal.signal(signal.SIGTERM, interrupted)
    names = [n.strip() for n in ARGS.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIO_RUNNERS]
    if unknown:
        raise SystemExit(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}")
    stamp = f"{datetime.now(UTC):%Y%m%d-%H%M%S}"
    logs = ARGS.logs or Path(tempfile.gettempdir()) / f"chaos-{stamp}"
    logs.mkdir(parents=True, exist_ok=True)
    call_command("migrate", "--noinput", verbosity=0)
    left_on = polls_disable()
    log(
        f"chaos suite on {git_describe()}: {ARGS.messages} messages, scenarios {', '.join(names)}; "
        f"logs in {logs}"
    )
    log(
        "production settings: "
        + ", ".join(f"{n}={getattr(settings, n, '(none)')}" for n in PRODUCTION_SETTINGS)
        + f", DEBUG={settings.DEBUG}; beat poll + periodic full sync disabled, left on: "
        + (", ".join(left_on) or "none")
    )
    results = [run_scenario(name, logs) for name in names]
    print()
    print(
        f"Chaos suite, {git_describe()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{ARGS.messages} messages in {len(FOLDERS)} folders, production timeouts "
        f"(visibility {getattr(settings, 'CELERY_VISIBILITY_TIMEOUT', '-')}s, lock TTL "
        f"{getattr(settings, 'SYNC_LOCK_TTL_SECONDS', '-')}s), no poll, no manual trigger:"
    )
    print()
    print(table(results))
    print()
    met = sum(r.met for r in results)
    print(f"{met}/{len(results)} scenarios met the target. Platform logs: {logs}")
    if ARGS.json:
        rows = [{**r.__dict__, "met": r.met} for r in results]
        ARGS.json.write_text(json.dumps(rows, indent=2, default=str))
    return 0 if met == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
