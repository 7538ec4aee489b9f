#!/usr/bin/env python3
"""IMAP sync benchmark against the private Dovecot: the message pipeline as production runs it.

    make bench-imap
    python bench/imap_sync.py --messages 2000 --idle-samples 10   (services' env already set)

One run measures:

1. Seeding: a fresh Dovecot user whose INBOX gets N messages of a realistic mix (mostly 2-20 KB
   text or text+HTML mails, about 10% with a 50-500 KB attachment, some real messages from
   tests/data/corpus) plus one message with a --big-attachment-mb attachment. The files are
   written straight into the user's maildir (Dovecot indexes them on the first SELECT), and
   the server's EXISTS is checked.
2. Full sync through the real queue, next to a bare imapclient download of the same messages
   (UID SEARCH ALL, UID FETCH BODY.PEEK[] by 100) and mbsync (isync) pulling the mailbox into
   a temporary maildir (median of 3 runs). The producer is a subprocess of the bench calling
   `ImapAccountSync(account).sync(full=True)` with INGEST_DELIVERY=queue (what a sync worker's
   task runs, without the task around it); the consumers are a real message worker, `celery
   -A emailplatform worker -Q email_new_message --concurrency=C` (prefork, C pool processes),
   C = MESSAGE_WORKER_CONCURRENCY or the CPU count, as `make run` starts it. The pass ends when
   its batches are stored. The same mailbox is then synced into fresh accounts with 1 and 2
   message-worker processes (throughput side by side) and with INGEST_DELIVERY=inline (the
   producer stores the batches itself), for comparison. Where the time went: the producer's
   IMAP fetch, SQL and backpressure waits (how many batches waited for a free slot), the
   message workers' CPU seconds against wall time x processes, the machine's busy CPUs.
3. Memory during that full sync: peak RSS (VmHWM) of the producer and of each message-worker
   process (the main process and each pool child), and Redis' used_memory sampled every
   100 ms (peak against the baseline before the sync). With --messages 100000 the Redis peak
   must be what it is at 10,000: backpressure bounds it, whatever N.
4. No-change incremental sync on accounts of 1k, 10k and N (at most 100k) messages, each fully
   synced first through the queue (the N account is the one of step 2): median of 5.
5. IDLE: an IdleWatcher on the 1k account triggers `imap_sync_account` (an incremental pass,
   INBOX first), in the bench process; the new mail goes through the pipeline
   with queue delivery (a batch this small its producer stores itself, INGEST_INLINE_MAX_*;
   larger ones go to the message worker); messages are APPENDed one at a time. The server's
   share: APPEND done -> the IDLE notice reaches the watcher's trigger; the platform's share:
   trigger -> the Message row is committed (polled every 5 ms).

Bench data lives under the Django user `bench-imap` (removed before the run and after it,
unless --keep) and Dovecot users `bimap...` created by the run (removed after it unless --keep).
The database is migrated first.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import math
import os
import platform
import queue
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emailplatform.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from imapclient import IMAPClient  # noqa: E402

import smtp_sync.sync  # noqa: E402
from bench.benchdata import bench_user_remove, dovecot_env  # noqa: E402
from bench.message_workers import MessageWorker  # noqa: E402
from bench.procstats import (  # noqa: E402
    ProcessStats,
    RedisMemorySampler,
    machine_cpu_seconds,
    tree_cpu_seconds,
)
from messages.batches import BatchPublisher  # noqa: E402
from messages.models import Account, Message, MessageLocation  # noqa: E402
from smtp_sync.accounts import ImapAccountInput, imap_account_create  # noqa: E402
from smtp_sync.idle import IdleWatcher  # noqa: E402
from smtp_sync.imap import ImapConnection  # noqa: E402
from smtp_sync.services import imap_sync_account  # noqa: E402
from smtp_sync.sync import ImapAccountSync, SyncReport  # noqa: E402

CORPUS_DIR = ROOT / "tests" / "data" / "corpus"
BENCH_USERNAME = "bench-imap"
DOVECOT_USER_PREFIX = "bimap"
MAX_MESSAGES = 100_000
INCREMENTAL_RUNS = 5
MBSYNC = "/usr/bin/mbsync"
MBSYNC_RUNS = 3
LATER_CLEANUP: list[tempfile.TemporaryDirectory] = []
CHILD_MARK = "BENCH-CHILD-RESULT "

TARGET_MBSYNC_RATIO = 1.0
TARGET_INCREMENTAL_RATIO = 1.5
TARGET_IDLE_P95 = 2.0
TARGET_IDLE_PLATFORM_P95 = 0.050
TARGET_PEAK_RSS_MB = 300


def target_redis_growth(workers: int) -> float:
    """README, "The message pipeline": Redis holds at most about 1.4 x INGEST_BATCH_BYTES (base64
    and the envelope) for each batch in flight, plus one arriving (the producer's query buffer)
    and one leaving per message worker (its reply buffer): a bound that does not grow with N."""
    batches = settings.INGEST_MAX_BATCHES_IN_FLIGHT + 1 + workers
    return 1.4 * settings.INGEST_BATCH_BYTES * batches


def log(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


# Realistic mail ---------------------------------------------------------------------------------

_WORDS_TEXT = (
    "the of and to a in is that for it as was with be by on not he this are or his from at "
    "which but have an they you were their one all we can her has there been if more when will "
    "would who so no meeting project report budget deadline review draft invoice schedule "
    "customer release update please thanks regards attached agenda quarter sales figures team "
    "server deploy issue ticket support contract proposal follow question answer tomorrow "
    "monday friday morning afternoon office call notes summary details version feedback "
    "approve payment order shipping delivery account password security backup migration "
    "database performance results analysis research paper conference travel hotel flight"
)
_WORDS = _WORDS_TEXT.split()
_NAMES = (
    "Alice Martin",
    "Bob Dupont",
    "Carol Smith",
    "David Müller",
    "Eve Johnson",
    "Frank Rossi",
    "Grace Lee",
    "Heidi Novak",
    "Ivan Petrov",
    "Judy García",
)
_ATTACHMENT_TYPES = (
    ("report.pdf", "application/pdf"),
    ("photo.jpg", "image/jpeg"),
    ("figures.xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    ("archive.zip", "application/zip"),
    ("scan.png", "image/png"),
)
BASE_TIMESTAMP = 1_700_000_000  # Nov 2023; message i is some minutes after message i-1


def corpus_messages() -> list[bytes]:
    """Every message of tests/data/corpus (regular files except README.md and dotfiles)."""
    if not CORPUS_DIR.is_dir():
        return []
    return [
        p.read_bytes()
        for p in sorted(CORPUS_DIR.rglob("*"))
        if p.is_file() and p.name != "README.md" and not p.name.startswith(".")
    ]


def _b64_lines(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def _address(name: str) -> str:
    local = name.split()[0].lower().replace("ü", "u").replace("í", "i")
    return f"{local}@example.org"


def _encoded_name(name: str) -> str:
    if name.isascii():
        return name
    return "=?utf-8?b?" + base64.b64encode(name.encode()).decode() + "?="


@dataclass
class Mail:
    raw: bytes
    flags: str  # maildir info letters, sorted: "S", "FS", "RS", ""
    timestamp: int
    crlf_only: bool  # every line ends in CRLF: Dovecot's virtual size is the file size


class MailMaker:
    """Deterministic realistic messages for one mailbox: `tag` makes every id unique."""

    CORPUS_EVERY = 25  # 4% real messages from the corpus
    ATTACHMENT_SHARE = 0.10

    def __init__(self, tag: str, corpus: Sequence[bytes]) -> None:
        self.tag = tag
        self.rng = random.Random(tag)
        self.corpus = corpus
        self.corpus_uses = 0
        self.lines = [
            " ".join(self.rng.choices(_WORDS, k=self.rng.randint(8, 13))).capitalize() + "."
            for _ in range(3000)
        ]
        self.recent_ids: list[str] = []

    # Pieces ----------------------------------------------------------------------------------
    def _text(self, size: int) -> list[str]:
        out: list[str] = []
        total = 0
        while total < size:
            line = self.rng.choice(self.lines)
            out.append(line)
            total += len(line) + 2
            if self.rng.random() < 0.15:
                out.append("")
                total += 2
        return out

    def _headers(self, i: int, ts: int, subject: str, message_id: str) -> list[str]:
        rng = self.rng
        sender, recipient = rng.sample(_NAMES, 2)
        date = format_datetime(datetime.fromtimestamp(ts, UTC))
        dkim = base64.b64encode(rng.randbytes(256)).decode()
        headers = [
            f"Return-Path: <{_address(sender)}>",
            f"Received: from mx{rng.randint(1, 9)}.example.org (mx.example.org [192.0.2.{i % 250}])"
            f"\r\n\tby mail.example.com with ESMTPS id {rng.getrandbits(64):016x}"
            f"\r\n\tfor <{_address(recipient)}>; {date}",
            f"Received: from [10.0.{i % 250}.{rng.randint(1, 250)}] by mx.example.org with ESMTPSA"
            f" id {rng.getrandbits(48):012x}; {date}",
            "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.org; s=sel1;"
            " h=from:to:subject:date:message-id;\r\n\tbh="
            + base64.b64encode(rng.randbytes(32)).decode()
            + ";\r\n\tb="
            + "\r\n\t ".join(dkim[k : k + 72] for k in range(0, len(dkim), 72)),
            f"Date: {date}",
            f'From: "{_encoded_name(sender)}" <{_address(sender)}>',
            f'To: "{_encoded_name(recipient)}" <{_address(recipient)}>',
            f"Subject: {subject}",
            f"Message-ID: {message_id}",
        ]
        if self.recent_ids and rng.random() < 0.3:  # a reply: threads form
            parent = rng.choice(self.recent_ids[-20:])
            headers += [f"In-Reply-To: {parent}", f"References: {parent}"]
        if rng.random() < 0.2:
            headers.append(f"List-Unsubscribe: <mailto:unsubscribe+{i}@lists.example.org>")
        headers += ["X-Mailer: bench-imap 1.0", "MIME-Version: 1.0"]
        return headers

    def _flags(self) -> str:
        r = self.rng.random()
        return "" if r < 0.10 else "FS" if r < 0.15 else "RS" if r < 0.25 else "S"

    # Messages --------------------------------------------------------------------------------
    def message(self, i: int, ts: int) -> Mail:
        if self.corpus and i % self.CORPUS_EVERY == self.CORPUS_EVERY - 1:
            return self._corpus_message(ts)
        rng = self.rng
        message_id = f"<bench.{self.tag}.{i}@example.org>"
        subject = " ".join(rng.choices(_WORDS, k=rng.randint(3, 8))).capitalize()
        if rng.random() < 0.1:
            subject = "=?utf-8?b?" + base64.b64encode(f"Ré: {subject} ✓".encode()).decode() + "?="
        headers = self._headers(i, ts, subject, message_id)
        size = int(math.exp(rng.uniform(math.log(2_000), math.log(20_000))))
        boundary = f"=_bench_{rng.getrandbits(64):016x}"
        if rng.random() < self.ATTACHMENT_SHARE:
            payload_size = int(math.exp(rng.uniform(math.log(50_000), math.log(500_000))))
            filename, content_type = rng.choice(_ATTACHMENT_TYPES)
            body = [
                f'Content-Type: multipart/mixed; boundary="{boundary}"',
                "",
                "This is a multi-part message in MIME format.",
                f"--{boundary}",
                "Content-Type: text/plain; charset=utf-8",
                "Content-Transfer-Encoding: 7bit",
                "",
                *self._text(min(size, 4_000)),
                f"--{boundary}",
                f'Content-Type: {content_type}; name="{filename}"',
                f'Content-Disposition: attachment; filename="{filename}"',
                "Content-Transfer-Encoding: base64",
                "",
            ]
            raw = (
                "\r\n".join(headers + body).encode()
                + b"\r\n"
                + _b64_lines(rng.randbytes(payload_size))
                + f"--{boundary}--\r\n".encode()
            )
        elif rng.random() < 0.5:
            body = [
                "Content-Type: text/plain; charset=utf-8",
                "Content-Transfer-Encoding: 7bit",
                "",
                *self._text(size),
            ]
            raw = ("\r\n".join(headers + body) + "\r\n").encode()
        else:
            text = self._text(size * 2 // 5)
            html = [f"<p>{line}</p>" if line else "<br>" for line in self._text(size * 3 // 5)]
            body = [
                f'Content-Type: multipart/alternative; boundary="{boundary}"',
                "",
                f"--{boundary}",
                "Content-Type: text/plain; charset=utf-8",
                "Content-Transfer-Encoding: 7bit",
                "",
                *text,
                f"--{boundary}",
                "Content-Type: text/html; charset=utf-8",
                "Content-Transfer-Encoding: 7bit",
                "",
                '<html><head><meta charset="utf-8"></head><body style="font-family:sans-serif">',
                *html,
                "</body></html>",
                f"--{boundary}--",
            ]
            raw = ("\r\n".join(headers + body) + "\r\n").encode()
        self.recent_ids.append(message_id)
        del self.recent_ids[:-50]
        return Mail(raw, self._flags(), ts, crlf_only=True)

    def _corpus_message(self, ts: int) -> Mail:
        """A real message, with a marker header that keeps the bytes of every copy unique."""
        copy, index = divmod(self.corpus_uses, len(self.corpus))
        self.corpus_uses += 1
        raw = self.corpus[index]
        eol = b"\r\n" if b"\r\n" in raw[:2000] else b"\n"
        marker = f"X-Bench-Copy: {self.tag}.{copy}".encode() + eol
        at = raw.find(b"\n") + 1 if raw.startswith(b"From ") else 0
        raw = raw[:at] + marker + raw[at:]
        return Mail(raw, self._flags(), ts, crlf_only=False)

    def big_message_header(self, i: int, ts: int, payload_mb: int) -> tuple[bytes, bytes]:
        """Head and tail around the base64 body of a message with a PAYLOAD_MB attachment."""
        boundary = f"=_bench_big_{self.tag}"
        message_id = f"<bench.{self.tag}.big@example.org>"
        headers = self._headers(i, ts, f"Big attachment ({payload_mb} MB)", message_id)
        body = [
            f'Content-Type: multipart/mixed; boundary="{boundary}"',
            "",
            f"--{boundary}",
            "Content-Type: text/plain; charset=utf-8",
            "",
            "The recording of the all-hands meeting is attached.",
            f"--{boundary}",
            'Content-Type: video/mp4; name="all-hands.mp4"',
            'Content-Disposition: attachment; filename="all-hands.mp4"',
            "Content-Transfer-Encoding: base64",
            "",
        ]
        return ("\r\n".join(headers + body) + "\r\n").encode(), f"--{boundary}--\r\n".encode()


# Dovecot ----------------------------------------------------------------------------------------


@dataclass
class DovecotUser:
    host: str
    port: int
    username: str
    password: str
    home: Path

    def client(self) -> IMAPClient:
        client = IMAPClient(self.host, port=self.port, ssl=False, timeout=120)
        client.login(self.username, self.password)
        return client


@dataclass
class Dovecot:
    host: str
    port: int
    users_dir: Path
    home_dir: Path
    created: list[DovecotUser] = field(default_factory=list)

    @classmethod
    def from_env(cls) -> Dovecot:
        return cls(*dovecot_env("make bench-imap"))

    def user_create(self) -> DovecotUser:
        username = f"{DOVECOT_USER_PREFIX}{uuid.uuid4().hex[:12]}"
        password = uuid.uuid4().hex
        (self.users_dir / username).write_text(f"{username}:{{PLAIN}}{password}\n")
        user = DovecotUser(self.host, self.port, username, password, self.home_dir / username)
        self.created.append(user)
        return user

    def owner(self) -> tuple[int, int] | None:
        """Who Dovecot reads mail as (the owner of the homes); None when that is us anyway."""
        if os.geteuid() != 0:
            return None
        st = self.home_dir.stat()
        return st.st_uid, st.st_gid

    def remove_created(self) -> None:
        for user in self.created:
            (self.users_dir / user.username).unlink(missing_ok=True)
            shutil.rmtree(user.home, ignore_errors=True)
        self.created.clear()


@dataclass
class Seeded:
    messages: int
    bytes: int
    seconds: float
    first_select_seconds: float = 0.0
    exists: int = 0


def maildir_seed(dovecot: Dovecot, user: DovecotUser, count: int, big_mb: int = 0) -> Seeded:
    """Write COUNT messages (+ one with a BIG_MB attachment) as files into the user's INBOX.

    Names follow Dovecot's maildir convention `<time>.M<usec>P<pid>.<host>,S=<size>,W=<vsize>
    :2,<flags>`: S= is the file size; W= (the size with CRLF line ends) only where the file has
    CRLF everywhere, so it equals S=. New files get UIDs in the order of their name's time.
    """
    start = time.perf_counter()
    owner = dovecot.owner()
    maildir = user.home / "Maildir"
    for path in (user.home, maildir, maildir / "cur", maildir / "new", maildir / "tmp"):
        path.mkdir(mode=0o700, exist_ok=True)
        if owner:
            os.chown(path, *owner)
    cur, tmp = maildir / "cur", maildir / "tmp"
    maker = MailMaker(user.username, CORPUS)
    pid = os.getpid()
    big_at = count // 2 if big_mb > 0 else -1
    total = count + (1 if big_mb > 0 else 0)
    written = 0
    i = 0
    for seq in range(total):
        ts = BASE_TIMESTAMP + seq * 300 + (seq * 7919) % 240
        base = f"{ts}.M{seq % 1_000_000:06d}P{pid}.bench"
        if seq == big_at:
            path, size = _write_big(maker, tmp, base, seq, ts, big_mb)
            final = cur / f"{base},S={size},W={size}:2,S"
            os.rename(path, final)
        else:
            mail = maker.message(i, ts)
            i += 1
            size = len(mail.raw)
            vsize = f",W={size}" if mail.crlf_only else ""
            final = cur / f"{base},S={size}{vsize}:2,{mail.flags}"
            final.write_bytes(mail.raw)
        os.utime(final, (ts, ts))  # the INTERNALDATE
        if owner:
            os.chown(final, *owner)
        written += size
    return Seeded(total, written, time.perf_counter() - start)


def _write_big(
    maker: MailMaker, tmp: Path, base: str, seq: int, ts: int, payload_mb: int
) -> tuple[Path, int]:
    head, tail = maker.big_message_header(seq, ts, payload_mb)
    rng = random.Random(f"{maker.tag}-big")
    path = tmp / base
    remaining = payload_mb * 1024 * 1024
    chunk = 57 * 16 * 1024  # a multiple of 57 bytes: whole base64 lines per chunk
    with path.open("wb") as f:
        f.write(head)
        while remaining > 0:
            n = min(chunk, remaining)
            f.write(_b64_lines(rng.randbytes(n)))
            remaining -= n
        f.write(tail)
    return path, path.stat().st_size


def first_select(user: DovecotUser, seeded: Seeded) -> Seeded:
    """SELECT INBOX (Dovecot indexes the new files now) and record what it EXISTS says."""
    start = time.perf_counter()
    with user.client() as c:
        seeded.exists = int(c.select_folder("INBOX", readonly=True)[b"EXISTS"])
    seeded.first_select_seconds = time.perf_counter() - start
    return seeded


# Baselines --------------------------------------------------------------------------------------


@dataclass
class Download:
    label: str
    messages: int
    bytes: int
    seconds: float
    skipped: list[str] = field(default_factory=list)  # the tool's own warnings

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


def bare_fetch(user: DovecotUser, batch: int = 100) -> Download:
    """imapclient alone: UID SEARCH ALL, then UID FETCH BODY.PEEK[] by BATCH, discarded."""
    start = time.perf_counter()
    count = nbytes = 0
    with user.client() as c:
        c.select_folder("INBOX", readonly=True)
        uids = c.search(["ALL"])
        for k in range(0, len(uids), batch):
            data = c.fetch(uids[k : k + batch], ["BODY.PEEK[]"])
            count += len(data)
            nbytes += sum(len(d.get(b"BODY[]") or b"") for d in data.values())
            del data
    return Download("bare imapclient fetch", count, nbytes, time.perf_counter() - start)


MBSYNCRC = """\
IMAPAccount bench
Host {host}
Port {port}
User {user}
Pass {password}
SSLType None
AuthMechs LOGIN PLAIN

IMAPStore bench-remote
Account bench

MaildirStore bench-local
Path {path}/
Inbox {path}/INBOX

Channel bench
Far :bench-remote:
Near :bench-local:
Patterns INBOX
Create Near
Sync Pull
SyncState *
"""


def mbsync_fetch(user: DovecotUser) -> Download | str:
    """mbsync (isync) pulling INBOX into a temporary maildir; a reason string if it cannot."""
    if not os.path.exists(MBSYNC):
        return f"{MBSYNC} not found (apt-get install isync)"
    holder = tempfile.TemporaryDirectory(prefix="bench-mbsync-")
    LATER_CLEANUP.append(holder)
    tmp = holder.name
    rc = Path(tmp, "mbsyncrc")
    rc.write_text(
        MBSYNCRC.format(
            host=user.host,
            port=user.port,
            user=user.username,
            password=user.password,
            path=Path(tmp, "mail"),
        )
    )
    rc.chmod(0o600)
    Path(tmp, "mail").mkdir()
    start = time.perf_counter()
    proc = subprocess.run(
        [MBSYNC, "-c", str(rc), "bench"], capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        return f"mbsync failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()}"
    inbox = Path(tmp, "mail", "INBOX")
    files = [p for sub in ("cur", "new") for p in (inbox / sub).iterdir()]
    nbytes = sum(p.stat().st_size for p in files)
    output = (proc.stdout + proc.stderr).splitlines()
    skipped = [line.strip() for line in output if "skipping" in line.lower()]
    return Download("mbsync (isync)", len(files), nbytes, seconds, skipped)


def settle() -> None:
    """Start each timed step alike: dirty pages flushed and, where allowed (root), the page
    cache dropped. Seeding and each mbsync run write the whole mailbox; on a machine that
    reclaims memory proactively, the full sync after three mbsync runs measured 30 s against
    20 s without them, slowing as it went."""
    os.sync()
    with contextlib.suppress(OSError):
        Path("/proc/sys/vm/drop_caches").write_text("1\n")


def quiet_after_load() -> None:
    """After a full sync, let its aftermath pass before timing quiet syncs: its writes flushed,
    and the tables vacuumed now rather than by an autovacuum during the measurement (after a
    100,000-message load, that doubled the no-change sync's time, logins included)."""
    os.sync()
    vacuum()


def vacuum() -> None:
    with connection.cursor() as cursor:
        cursor.execute("VACUUM (ANALYZE)")


def mbsync_median(user: DovecotUser) -> Download | str:
    runs = []
    for _ in range(MBSYNC_RUNS):
        settle()
        run = mbsync_fetch(user)
        if isinstance(run, str):
            return run
        runs.append(run)
        log(f"    mbsync run: {run.seconds:.1f}s")
    return sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]


# Sync under measurement ------------------------------------------------------------------------


@dataclass
class SyncStats:
    """Where a sync's time went: IMAP fetches (in the prefetch thread) and SQL (in the writer)."""

    seconds: float = 0.0
    connect_seconds: float = 0.0  # connect + LOGIN (Dovecot delays logins after failed ones)
    imap_fetch_seconds: float = 0.0
    db_seconds: float = 0.0
    db_queries: int = 0
    new: int = 0
    done: bool = True
    queries: list[tuple[float, str]] = field(default_factory=list)  # (seconds, SQL), if kept


def measured_sync(
    account: Account, *, full: bool, keep_queries: bool = False, label: str = ""
) -> SyncStats:
    """One `ImapAccountSync(account).sync(full=...)` with time per component (and per query);
    with a LABEL, its progress is logged every 10% (a slowdown as the store grows shows)."""
    stats = SyncStats()
    next_report = [0.1]
    last = [0.0, 0]

    def progress(done: int, total: int) -> None:
        if not label or not total or done / total < next_report[0]:
            return
        now = time.perf_counter() - start
        rate = (done - last[1]) / (now - last[0]) if now > last[0] else 0.0
        log(f"{label} {done / total:4.0%} {done:>8,} msgs {now:7.1f}s  ({rate:,.0f} msg/s lately)")
        next_report[0] = math.floor(done / total * 10 + 1) / 10
        last[:] = [now, done]

    class TimedConnection(ImapConnection):
        def connect(self) -> None:
            t = time.perf_counter()
            try:
                super().connect()
            finally:
                stats.connect_seconds += time.perf_counter() - t

        def fetch_messages(self, uids, include_body=True, **kwargs):  # type: ignore[override]
            t = time.perf_counter()
            try:
                return super().fetch_messages(uids, include_body, **kwargs)
            finally:
                stats.imap_fetch_seconds += time.perf_counter() - t

        def fetch_flags(self, uids):  # type: ignore[override]
            t = time.perf_counter()
            try:
                return super().fetch_flags(uids)
            finally:
                stats.imap_fetch_seconds += time.perf_counter() - t

    def db_timer(execute, sql, params, many, context):
        t = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            seconds = time.perf_counter() - t
            stats.db_seconds += seconds
            stats.db_queries += 1
            if keep_queries:
                stats.queries.append((seconds, " ".join(sql.split())))

    account = Account.objects.get(pk=account.pk)
    start = time.perf_counter()
    with connection.execute_wrapper(db_timer):
        report: SyncReport = ImapAccountSync(
            account, connection_factory=TimedConnection, progress=progress
        ).sync(full=full)
    stats.seconds = time.perf_counter() - start
    stats.new, stats.done = report.new, report.done
    return stats


def _proc_status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


class CountingPublisher(BatchPublisher):
    """The sync's BatchPublisher, counting its waits: a publish that had to sleep for a free
    slot (backpressure: the message workers are behind), and the drains (the pass's end)."""

    counts: dict[str, float] = {
        "published": 0,
        "waited": 0,
        "wait_seconds": 0.0,
        "drain_seconds": 0.0,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._publishing = False
        self._sleeps = 0

    def publish(self, items, **kwargs):  # type: ignore[override]
        self._publishing = True
        try:
            super().publish(items, **kwargs)
        finally:
            self._publishing = False
        self.counts["published"] += 1

    def _wait_until(self, done) -> None:  # type: ignore[override]
        start, sleeps = time.perf_counter(), self._sleeps
        super()._wait_until(done)
        seconds = time.perf_counter() - start
        if not self._publishing:
            self.counts["drain_seconds"] += seconds
        elif self._sleeps > sleeps:
            self.counts["waited"] += 1
            self.counts["wait_seconds"] += seconds

    def _sleep(self) -> None:
        self._sleeps += 1
        super()._sleep()


def child_full_sync(account_id: int) -> int:
    """Subprocess mode: the producer of step 2 (INGEST_DELIVERY from the environment), with
    its own peak RSS, CPU seconds, backpressure waits and the machine's busy CPU seconds."""
    smtp_sync.sync.BatchPublisher = CountingPublisher  # type: ignore[misc]
    account = Account.objects.get(pk=account_id)
    rss_before = _proc_status_kb("VmRSS")
    busy_before, total_before = machine_cpu_seconds()
    stats = measured_sync(account, full=True, label="[2] full sync")
    busy_after, total_after = machine_cpu_seconds()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        **stats.__dict__,
        **CountingPublisher.counts,
        "rss_before_kb": rss_before,
        "vmhwm_kb": _proc_status_kb("VmHWM"),
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "machine_busy_cores": (busy_after - busy_before)
        / max(1e-9, total_after - total_before)
        * (os.cpu_count() or 1),
    }
    print(CHILD_MARK + json.dumps(result), flush=True)
    return 0


def run_child_full_sync(account: Account, delivery: str) -> dict[str, Any]:
    connection.close()  # nothing shared with the child; reconnect afterwards
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--_child-full-sync", str(account.pk)],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
        env={**os.environ, "INGEST_DELIVERY": delivery},
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(CHILD_MARK)]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"the full-sync subprocess failed ({proc.returncode}):\n{proc.stdout}")
    return json.loads(lines[-1][len(CHILD_MARK) :])


def postmaster_pid() -> int | None:
    """The PostgreSQL server's main process, when it runs on this machine (its backends are
    its children)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    stats = Path(f"/proc/{backend}/stat")
    if not stats.exists():
        return None
    text = stats.read_text()
    return int(text[text.rindex(")") + 2 :].split()[1])


def postgres_cpu_seconds(postmaster: int | None) -> float:
    """CPU seconds of the PostgreSQL processes, live and exited (0 when it is not local)."""
    return tree_cpu_seconds(postmaster) if postmaster else 0.0


@dataclass
class FullRun:
    """One full sync of the seeded mailbox into a fresh account."""

    label: str
    account: Account
    stats: SyncStats
    child: dict[str, Any]
    stored: int
    concurrency: int = 0  # message-worker processes; 0: inline
    workers: list[ProcessStats] = field(default_factory=list)  # at the end of the sync
    worker_cpu_seconds: float = 0.0
    redis_baseline: int = 0
    redis_peak: int = 0
    redis_samples: int = 0

    @property
    def rate(self) -> float:
        return self.stored / self.stats.seconds if self.stats.seconds else 0.0


def full_run(
    owner, user: DovecotUser, label: str, concurrency: int, logs: Path, *, keep_worker=False
) -> tuple[FullRun, MessageWorker | None]:
    """A full sync of USER's mailbox into a fresh account: through the queue with a message
    worker of CONCURRENCY processes (left running with KEEP_WORKER), or inline (0)."""
    account = account_create(owner, user, suffix=label)
    worker = None
    if concurrency:
        worker = MessageWorker(concurrency, logs / f"message-worker-{label}.log")
        worker.start()
    try:
        log(f"[2] full sync, {label}: {user.username} into account {account.pk} ...")
        settle()
        cpu_before = worker.cpu_seconds() if worker else 0.0
        postmaster = postmaster_pid()
        pg_before = postgres_cpu_seconds(postmaster)
        with RedisMemorySampler(settings.CELERY_BROKER_URL) as redis_memory:
            child = run_child_full_sync(account, "queue" if concurrency else "inline")
        workers = worker.stats() if worker else []
        cpu = sum(s.cpu_seconds for s in workers) - cpu_before
        child["postgres_cpu_seconds"] = postgres_cpu_seconds(postmaster) - pg_before
    except BaseException:
        if worker:
            worker.stop()
        raise
    if worker and not keep_worker:
        worker.stop()
        worker = None
    stats = SyncStats(**{k: child[k] for k in SyncStats.__dataclass_fields__})
    run = FullRun(
        label,
        account,
        stats,
        child,
        inbox_locations(account),
        concurrency,
        workers,
        cpu,
        redis_memory.baseline,
        redis_memory.peak,
        redis_memory.samples,
    )
    log(
        f"[2] {label}: {stats.seconds:.1f}s ({run.rate:,.0f} msg/s), {run.stored:,} stored;"
        f" producer: IMAP fetch {stats.imap_fetch_seconds:.1f}s, SQL {stats.db_seconds:.1f}s,"
        f" {child['waited']:.0f} of {child['published']:.0f} batches waited on backpressure"
        f" ({child['wait_seconds']:.1f}s), drains {child['drain_seconds']:.1f}s,"
        f" CPU {child['cpu_seconds']:.1f}s; message workers CPU {cpu:.1f}s;"
        f" PostgreSQL CPU {child['postgres_cpu_seconds']:.1f}s;"
        f" machine busy {child['machine_busy_cores']:.2f} cores;"
        f" Redis peak {_mb(run.redis_peak)} (baseline {_mb(run.redis_baseline)})"
    )
    return run, worker


# Steps ------------------------------------------------------------------------------------------


def account_create(owner, user: DovecotUser, suffix: str = "") -> Account:
    """A fresh account of USER's mailbox (SUFFIX tells several accounts of one mailbox apart)."""
    local = f"{user.username}+{suffix}" if suffix else user.username
    return imap_account_create(
        owner=owner,
        data=ImapAccountInput(
            email_address=f"{local}@bench.invalid",
            imap_host=user.host,
            imap_port=user.port,
            imap_security="none",
            username=user.username,
            password=user.password,
        ),
        start_sync=False,
    )


def inbox_locations(account: Account) -> int:
    return MessageLocation.objects.filter(
        message__account=account, folder__name="INBOX", uid__isnull=False
    ).count()


@dataclass
class IncrementalResult:
    size: int
    seeded: Seeded
    full: SyncStats
    stored: int
    runs: list[SyncStats]
    account: Account
    user: DovecotUser
    reused: bool = False  # step 2's account: its full sync is reported there

    @property
    def median(self) -> float:
        return statistics.median(r.seconds for r in self.runs)


def incremental_bench(
    dovecot: Dovecot, owner, size: int, synced: tuple[DovecotUser, Seeded, FullRun] | None = None
) -> IncrementalResult:
    """SYNCED: a mailbox of SIZE messages fully synced already (step 2's)."""
    if synced is not None:
        user, seeded, run = synced
        account, full, stored = run.account, run.stats, run.stored
    else:
        user = dovecot.user_create()
        seeded = first_select(user, maildir_seed(dovecot, user, size))
        log(f"[incremental {size:,}] seeded {seeded.exists:,} messages in {seeded.seconds:.1f}s")
        account = account_create(owner, user)
        settle()
        full = measured_sync(account, full=True, label=f"[incremental {size:,}] full sync")
        stored = inbox_locations(account)
        log(f"[incremental {size:,}] full sync {full.seconds:.1f}s ({stored:,} stored)")
    quiet_after_load()
    runs = [measured_sync(account, full=False, keep_queries=True) for _ in range(INCREMENTAL_RUNS)]
    median = statistics.median(r.seconds for r in runs)
    log(
        f"[incremental {size:,}] no-change sync median {median * 1000:.0f} ms"
        f" (SQL {_median_db(runs) * 1000:.0f} ms, login"
        f" {statistics.median(r.connect_seconds for r in runs) * 1000:.0f} ms);"
        " slowest queries (median of the runs):"
    )
    for seconds, sql in slowest_queries(runs, 3):
        log(f"    {seconds * 1000:6.1f} ms  {sql[:150]}")
    return IncrementalResult(size, seeded, full, stored, runs, account, user, synced is not None)


def slowest_queries(runs: Sequence[SyncStats], top: int) -> list[tuple[float, str]]:
    """The TOP queries by median time over runs that issued the same queries in order."""
    per_position = zip(*(r.queries for r in runs), strict=False)
    timed = [(statistics.median(s for s, _ in qs), qs[0][1]) for qs in per_position]
    return sorted(timed, reverse=True)[:top]


@dataclass
class IdleResult:
    latencies: list[float]  # APPEND done -> row committed (seen by a poll every 5 ms)
    notify: list[float]  # APPEND done -> the watcher's trigger called: the server's share
    platform: list[float]  # trigger called -> row committed: the platform's share
    missed: int
    triggers: int
    queued: list[float] = field(default_factory=list)  # publish called -> row committed


class SyncWorkerThread(threading.Thread):
    """Runs the passes an IdleWatcher triggers, one at a time, as a sync worker process runs
    the listener's tasks: in a thread of its own that keeps its database connection between
    them (workers do, see emailplatform.celery). Run in the watcher's thread, each pass paid a
    new PostgreSQL connection (11 ms measured on a quiet machine): the watcher closes its own
    after every trigger, as it must, since it holds none while it idles."""

    def __init__(self) -> None:
        super().__init__(name="bench-sync-worker", daemon=True)
        self.jobs: queue.Queue = queue.Queue()

    def run(self) -> None:
        while (job := self.jobs.get()) is not None:
            account_id, done, failed = job
            try:
                imap_sync_account(account_id)
            except BaseException as exc:  # raised again in the caller's thread
                failed.append(exc)
            finally:
                done.set()
        connection.close()

    def sync(self, account_id: int) -> None:
        done, failed = threading.Event(), []
        self.jobs.put((account_id, done, failed))
        done.wait()
        if failed:
            raise failed[0]

    def stop(self) -> None:
        self.jobs.put(None)
        self.join(timeout=30)


def idle_bench(account: Account, user: DovecotUser, samples: int) -> IdleResult:
    """APPEND one message at a time while an IdleWatcher holds IDLE; time until its row.

    The trigger runs `imap_sync_account` in a `SyncWorkerThread`, as the listener's task runs
    in a sync worker, and waits for it; the sync hands the new mail to its publisher, which
    stores a batch this small itself (larger ones: a message worker stores them)."""
    started: list[float] = []
    finished: list[float] = []
    published: list[float] = []

    class TimedPublisher(BatchPublisher):
        def publish(self, items, **kwargs):  # type: ignore[override]
            published.append(time.perf_counter())
            super().publish(items, **kwargs)

    worker = SyncWorkerThread()
    worker.start()

    def trigger(account_id: int) -> None:
        started.append(time.perf_counter())
        worker.sync(account_id)
        finished.append(time.perf_counter())

    smtp_sync.sync.BatchPublisher = TimedPublisher  # type: ignore[misc]

    maker = MailMaker(f"{user.username}-idle", ())
    watcher = IdleWatcher(account.pk, trigger)
    watcher.start()
    result = IdleResult([], [], [], 0, 0)
    try:
        _wait(lambda: len(finished) >= 1, 60, "the IDLE watcher's catch-up sync")
        time.sleep(0.5)  # IDLE is now held
        with user.client() as client:
            for k in range(samples + 1):
                mail = maker.message(k, int(time.time()))
                message_id = f"<bench.{maker.tag}.{k}@example.org>"
                if k == samples:  # wakes the watcher so that it sees stop() at once
                    watcher.stop()
                    client.append("INBOX", mail.raw)
                    break
                syncs_before, published_before = len(started), len(published)
                client.append("INBOX", mail.raw, flags=[b"\\Seen"])
                appended = time.perf_counter()
                seen = _wait(
                    lambda mid=message_id: Message.objects.filter(
                        account_id=account.pk, message_id_header=mid
                    ).exists(),
                    30,
                    None,
                    interval=0.005,
                )
                stored = time.perf_counter()
                if seen and len(started) > syncs_before:
                    result.latencies.append(stored - appended)
                    result.notify.append(started[syncs_before] - appended)
                    result.platform.append(stored - started[syncs_before])
                    if len(published) > published_before:
                        result.queued.append(stored - published[published_before])
                elif not seen:
                    result.missed += 1
                # Start the next sample from an idling watcher: its sync is over, IDLE re-issued.
                _wait(lambda n=syncs_before: len(finished) > n, 30, None)
                time.sleep(0.05)
    finally:
        watcher.stop()
        watcher.join(timeout=40)
        worker.stop()
        smtp_sync.sync.BatchPublisher = BatchPublisher  # type: ignore[misc]
    result.triggers = len(finished)
    return result


def _wait(
    condition: Callable[[], bool], timeout: float, what: str | None, interval: float = 0.05
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    if what:
        raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
    return False


def remove_bench_data() -> float:
    """Delete the bench user, everything it owns, and the files no one else uses; then VACUUM,
    so that no autovacuum of the deleted rows runs into the next measurement (one did: a full
    sync's SQL took 23.6 s instead of 12)."""
    start = time.perf_counter()
    if not bench_user_remove(BENCH_USERNAME):
        return 0.0
    vacuum()
    return time.perf_counter() - start


# Output -----------------------------------------------------------------------------------------


def _s(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f} msg/s" if seconds else "-"


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:,.0f} MB"


def _median_db(runs: Sequence[SyncStats]) -> float:
    return statistics.median(r.db_seconds for r in runs)


def _percentile(values: Sequence[float], pct: int) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def _ok(good: bool | None) -> str:
    return "-" if good is None else "yes" if good else "NO"


def print_table(rows: list[tuple[str, str, str, str, str, str]]) -> None:
    header = ("metric", "value", "baseline", "ratio", "target", "ok?")
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return " | ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)).rstrip()

    print(line(header))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


def _server_versions(dovecot: Dovecot) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg = cursor.fetchone()[0].split()[0]
    try:
        with IMAPClient(dovecot.host, port=dovecot.port, ssl=False, timeout=10) as c:
            greeting = c.welcome.decode(errors="replace").rsplit("]", 1)[-1].strip()
    except Exception as exc:
        greeting = f"? ({exc})"
    return f"PostgreSQL {pg}, IMAP server: {greeting}"


# Main -------------------------------------------------------------------------------------------

CORPUS: list[bytes] = []


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--messages", type=int, default=10_000, help=f"N (default 10000, at most {MAX_MESSAGES})"
    )
    parser.add_argument("--skip-mbsync", action="store_true", help="no mbsync baseline")
    parser.add_argument("--idle-samples", type=int, default=50, help="IDLE appends (default 50)")
    parser.add_argument(
        "--big-attachment-mb", type=int, default=50, help="size of the big one (0: none)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the bench data afterwards")
    parser.add_argument("--_child-full-sync", type=int, metavar="ACCOUNT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child_full_sync is not None:
        return child_full_sync(args._child_full_sync)
    if not 1 <= args.messages <= MAX_MESSAGES:
        parser.error(f"--messages must be 1..{MAX_MESSAGES}")
    if args.idle_samples < 0 or args.big_attachment_mb < 0:
        parser.error("--idle-samples and --big-attachment-mb cannot be negative")
    if settings.DEBUG:
        print("warning: DEBUG is on; numbers will be worse than production", file=sys.stderr)

    dovecot = Dovecot.from_env()
    settings.INGEST_DELIVERY = "queue"  # the incremental and IDLE syncs of this process too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up when killed, too
    call_command("migrate", verbosity=0)
    CORPUS[:] = corpus_messages()
    removed = remove_bench_data()
    if removed:
        log(f"previous bench data removed in {removed:.1f}s")
    owner = get_user_model().objects.create_user(BENCH_USERNAME, f"{BENCH_USERNAME}@bench.invalid")
    wall = time.perf_counter()
    load_before = os.getloadavg()[0]
    try:
        rows, ok = run(args, dovecot, owner)
    finally:
        for holder in LATER_CLEANUP:
            holder.cleanup()
        if not args.keep:
            connection.close()
            removed = remove_bench_data()
            dovecot.remove_created()
            log(f"bench data removed in {removed:.1f}s")
    print()
    print(
        f"IMAP sync benchmark: N={args.messages:,}, big attachment {args.big_attachment_mb} MB,"
        f" {args.idle_samples} IDLE samples; {time.perf_counter() - wall:.0f} s in all"
    )
    print(
        f"  Python {platform.python_version()}, {os.cpu_count()} CPUs, {_server_versions(dovecot)}"
    )
    print(
        f"  load average (1 min) {load_before:.2f} before the run, {os.getloadavg()[0]:.2f} after"
        " (other work on the machine skews the numbers)"
    )
    print()
    print_table(rows)
    return 0 if ok else 1


def run(args: argparse.Namespace, dovecot: Dovecot, owner) -> tuple[list, bool]:
    n = args.messages
    rows: list[tuple[str, str, str, str, str, str]] = []
    ok = True

    # 1. Seeding ----------------------------------------------------------------------------
    log(f"[1] seeding {n:,} messages (+ big attachment {args.big_attachment_mb} MB) ...")
    user = dovecot.user_create()
    seeded = first_select(user, maildir_seed(dovecot, user, n, args.big_attachment_mb))
    log(
        f"[1] {seeded.messages:,} files, {_mb(seeded.bytes)} in {seeded.seconds:.1f}s;"
        f" first SELECT {seeded.first_select_seconds:.1f}s, EXISTS {seeded.exists:,}"
    )
    counted = seeded.exists == seeded.messages
    ok &= counted
    rows.append(
        (
            f"seed INBOX: {seeded.messages:,} msgs, {_mb(seeded.bytes)} (maildir files)",
            f"{_s(seeded.seconds)} ({_rate(seeded.messages, seeded.seconds)})",
            "-",
            "-",
            "-",
            "-",
        )
    )
    rows.append(
        (
            "Dovecot first SELECT (indexes the files)",
            _s(seeded.first_select_seconds),
            "-",
            "-",
            "-",
            "-",
        )
    )
    rows.append(
        (
            "server EXISTS after seeding",
            f"{seeded.exists:,}",
            f"{seeded.messages:,} written",
            "-",
            "equal",
            _ok(counted),
        )
    )

    # 2. Full sync through the queue vs baselines (3. its memory) ---------------------------
    log("[2] bare imapclient fetch ...")
    settle()
    bare = bare_fetch(user)
    log(f"[2] bare: {bare.messages:,} msgs, {_mb(bare.bytes)} in {bare.seconds:.1f}s")
    mbsync: Download | str = "skipped (--skip-mbsync)"
    if not args.skip_mbsync:
        log(f"[2] mbsync, {MBSYNC_RUNS} runs (its time varies with the disk) ...")
        mbsync = mbsync_median(user)
        log(
            f"[2] mbsync: {mbsync.messages:,} msgs in {mbsync.seconds:.1f}s (median)"
            if isinstance(mbsync, Download)
            else f"[2] mbsync: {mbsync}"
        )
    logs_holder = tempfile.TemporaryDirectory(prefix="bench-imap-logs-")
    LATER_CLEANUP.append(logs_holder)
    logs = Path(logs_holder.name)
    default = message_worker_concurrency()
    main_run, _ = full_run(owner, user, f"queue-{default}", default, logs)
    by_concurrency = {default: main_run}
    for concurrency in (1, 2):
        if concurrency not in by_concurrency:
            by_concurrency[concurrency], _ = full_run(
                owner, user, f"queue-{concurrency}", concurrency, logs
            )
    inline_run, _ = full_run(owner, user, "inline", 0, logs)
    for r in (*by_concurrency.values(), inline_run):
        good = r.stored == seeded.exists and r.stats.done
        ok &= good
        if not good:
            rows.append(
                (f"  {r.label}: stored INBOX locations", f"{r.stored:,}", "-", "-", "equal", "NO")
            )
    ok &= bare.messages == seeded.exists
    rows += full_sync_rows(main_run, seeded, bare, mbsync)
    ok &= all(row[-1] != "NO" for row in rows)
    one, two = by_concurrency[1], by_concurrency[2]
    rows.append(
        (
            "full sync throughput, 1 / 2 message-worker processes",
            f"{one.rate:,.0f} / {two.rate:,.0f} msg/s",
            f"{_s(one.stats.seconds)} / {_s(two.stats.seconds)}",
            f"{two.rate / one.rate:.2f}x" if one.rate else "-",
            "-",
            "-",
        )
    )
    rows.append(
        (
            "full sync inline (INGEST_DELIVERY=inline, no worker)",
            f"{_s(inline_run.stats.seconds)} ({inline_run.rate:,.0f} msg/s)",
            f"queue: {_s(main_run.stats.seconds)}",
            f"{main_run.stats.seconds / inline_run.stats.seconds:.2f}x"
            if inline_run.stats.seconds
            else "-",
            "-",
            "-",
        )
    )
    rows += memory_rows(main_run, args.big_attachment_mb)
    ok &= all(row[-1] != "NO" for row in rows)

    # 4. Incremental, and 5. IDLE, with the default message worker running --------------------
    worker = MessageWorker(default, logs / "message-worker-incremental.log")
    with worker:
        inc_rows, inc_ok, base = incremental_section(dovecot, owner, n, (user, seeded, main_run))
        rows += inc_rows
        ok &= inc_ok
        if args.idle_samples:
            idle_rows, idle_ok = idle_section(base, args.idle_samples)
            rows += idle_rows
            ok &= idle_ok
    return rows, ok


def message_worker_concurrency() -> int:
    """The message worker's concurrency as `make run` sets it (scripts/run_platform.py)."""
    return int(os.environ.get("MESSAGE_WORKER_CONCURRENCY") or os.cpu_count() or 1)


Row = tuple[str, str, str, str, str, str]


def full_sync_rows(
    run: FullRun, seeded: Seeded, bare: Download, mbsync: Download | str
) -> list[Row]:
    stats, child = run.stats, run.child
    value = f"{_s(stats.seconds)} ({run.rate:,.0f} msg/s)"
    what = f"full sync {seeded.exists:,} msgs, queue, {run.concurrency} message-worker processes"
    rows: list[Row] = [
        (
            f"{what} vs bare fetch",
            value,
            f"{_s(bare.seconds)} ({_rate(bare.messages, bare.seconds)})",
            f"{stats.seconds / bare.seconds:.1f}x",
            "-",
            "-",
        )
    ]
    if isinstance(mbsync, Download):
        ratio = stats.seconds / mbsync.seconds
        rows.append(
            (
                f"{what} vs mbsync",
                value,
                f"{_s(mbsync.seconds)}, median of {MBSYNC_RUNS}",
                f"{ratio:.2f}x",
                f"<= {TARGET_MBSYNC_RATIO:.1f}x",
                _ok(ratio <= TARGET_MBSYNC_RATIO),
            )
        )
        if mbsync.messages != seeded.exists or mbsync.skipped:
            reason = mbsync.skipped[0] if mbsync.skipped else "no warning"
            rows.append(
                (
                    "  mbsync: messages it stored",
                    f"{mbsync.messages:,}",
                    f"{seeded.exists:,} on server",
                    "-",
                    "-",
                    "-",
                )
            )
            log(f"[2] mbsync skipped {len(mbsync.skipped)}, e.g.: {reason}")
    else:
        rows.append((f"{what} vs mbsync", value, mbsync, "-", "-", "-"))
    capacity = stats.seconds * run.concurrency
    rows += [
        (
            "  producer: IMAP fetch (prefetch thread) / SQL / CPU",
            f"{_s(stats.imap_fetch_seconds)} / {_s(stats.db_seconds)} / {_s(child['cpu_seconds'])}",
            f"{stats.db_queries:,} queries",
            "-",
            "-",
            "-",
        ),
        (
            "  producer: batches that waited on backpressure",
            f"{child['waited']:.0f} of {child['published']:.0f}",
            f"waiting {_s(child['wait_seconds'])}, drains {_s(child['drain_seconds'])}",
            "-",
            "-",
            "-",
        ),
        (
            "  message workers: CPU / (wall x processes)",
            f"{_s(run.worker_cpu_seconds)} / {_s(capacity)}",
            f"{run.worker_cpu_seconds / capacity:.0%} busy" if capacity else "-",
            "-",
            "-",
            "-",
        ),
        (
            "  PostgreSQL: CPU during the full sync",
            _s(child["postgres_cpu_seconds"]),
            "every backend's, the exited ones' too",
            "-",
            "-",
            "-",
        ),
        (
            "  machine: CPUs busy during the full sync",
            f"{child['machine_busy_cores']:.2f} of {os.cpu_count()}",
            "every process (PostgreSQL, Dovecot, others')",
            "-",
            "-",
            "-",
        ),
        (
            "  full sync: stored INBOX locations",
            f"{run.stored:,}",
            f"{seeded.exists:,} on server",
            "-",
            "equal",
            _ok(run.stored == seeded.exists and stats.done),
        ),
    ]
    return rows


def memory_rows(run: FullRun, big_mb: int) -> list[Row]:
    peak_mb = run.child["vmhwm_kb"] / 1024
    rows: list[Row] = [
        (
            f"peak RSS, producer (sync) process (incl. {big_mb} MB attachment)",
            f"{peak_mb:,.0f} MB",
            f"{run.child['rss_before_kb'] / 1024:,.0f} MB before sync",
            "-",
            f"< {TARGET_PEAK_RSS_MB} MB",
            _ok(peak_mb < TARGET_PEAK_RSS_MB),
        )
    ]
    for k, process in enumerate(run.workers):
        role = "main process" if k == 0 else f"pool child {k}"
        mb = process.peak_rss_kb / 1024
        rows.append(
            (
                f"peak RSS, message worker {role} (pid {process.pid})",
                f"{mb:,.0f} MB",
                f"{process.rss_kb / 1024:,.0f} MB at the end",
                "-",
                f"< {TARGET_PEAK_RSS_MB} MB",
                _ok(mb < TARGET_PEAK_RSS_MB),
            )
        )
    growth = run.redis_peak - run.redis_baseline
    bound = target_redis_growth(run.concurrency)
    rows.append(
        (
            f"Redis used_memory peak during the full sync ({run.redis_samples} samples)",
            f"{_mb(run.redis_peak)} (+{_mb(growth)})",
            f"{_mb(run.redis_baseline)} before",
            "-",
            f"< +{_mb(int(bound))}, any N",
            _ok(growth < bound),
        )
    )
    return rows


def incremental_section(
    dovecot: Dovecot, owner, n: int, synced: tuple[DovecotUser, Seeded, FullRun]
) -> tuple[list[Row], bool, IncrementalResult]:
    rows: list[Row] = []
    ok = True
    sizes = sorted({1_000, 10_000, min(n, MAX_MESSAGES)})
    results = [
        incremental_bench(dovecot, owner, size, synced if size == n else None) for size in sizes
    ]
    for r in results:
        good = r.stored == r.seeded.exists == r.size
        ok &= good
        if r.reused:
            continue
        rows.append(
            (
                f"full sync {r.size:,} msgs (queue, for the incremental)",
                f"{_s(r.full.seconds)} ({_rate(r.stored, r.full.seconds)})",
                f"{r.full.db_queries:,} queries",
                "-",
                f"{r.size:,} stored",
                _ok(good),
            )
        )
    base = next(r for r in results if r.size == 1_000)
    for r in results:
        rows.append(
            (
                f"no-change incremental sync, {r.size:,} msgs (median of {len(r.runs)})",
                _s(r.median),
                f"{r.runs[0].db_queries} queries, SQL {_s(_median_db(r.runs))}, login"
                f" {_s(statistics.median(x.connect_seconds for x in r.runs))}",
                f"{r.median / base.median:.2f}x" if r is not base else "1.00x",
                "-",
                "-",
            )
        )
    ten = next(r for r in results if r.size == 10_000)
    inc_ratio = ten.median / base.median
    ok &= inc_ratio <= TARGET_INCREMENTAL_RATIO
    rows.append(
        (
            f"incremental {ten.size:,} / {base.size:,}",
            _s(ten.median),
            _s(base.median),
            f"{inc_ratio:.2f}x",
            f"<= {TARGET_INCREMENTAL_RATIO}x",
            _ok(inc_ratio <= TARGET_INCREMENTAL_RATIO),
        )
    )
    return rows, ok, base


def idle_section(base: IncrementalResult, samples: int) -> tuple[list[Row], bool]:
    log(f"[5] IDLE latency, {samples} appends to the {base.size:,} account ...")
    idle = idle_bench(base.account, base.user, samples)
    rows: list[Row] = []
    ok = idle.missed == 0
    if idle.latencies:
        total_p95 = _percentile(idle.latencies, 95)
        platform_p95 = _percentile(idle.platform, 95)
        log(
            f"[5] IDLE p50/p95: server {_s(statistics.median(idle.notify))} /"
            f" {_s(_percentile(idle.notify, 95))}, platform {_s(statistics.median(idle.platform))}"
            f" / {_s(platform_p95)}, total {_s(statistics.median(idle.latencies))} /"
            f" {_s(total_p95)}; {idle.triggers} syncs triggered"
        )
        ok &= platform_p95 < TARGET_IDLE_PLATFORM_P95 and total_p95 < TARGET_IDLE_P95
        rows += [
            (
                f"IDLE server share p50 / p95 ({len(idle.notify)} msgs): APPEND -> notice",
                f"{_s(statistics.median(idle.notify))} / {_s(_percentile(idle.notify, 95))}",
                f"max {_s(max(idle.notify))}",
                "-",
                "-",
                "-",
            ),
            (
                "IDLE platform share p50 / p95: notice -> row committed",
                f"{_s(statistics.median(idle.platform))} / {_s(platform_p95)}",
                f"max {_s(max(idle.platform))}",
                "-",
                f"p95 < {TARGET_IDLE_PLATFORM_P95 * 1000:.0f} ms",
                _ok(platform_p95 < TARGET_IDLE_PLATFORM_P95),
            ),
            (
                "  of which publish called -> row committed (the batch's store)",
                f"{_s(statistics.median(idle.queued))} / {_s(_percentile(idle.queued, 95))}"
                if idle.queued
                else "-",
                "the rest: the sync's own IMAP and SQL work",
                "-",
                "-",
                "-",
            ),
            (
                "IDLE APPEND -> row p50 / p95",
                f"{_s(statistics.median(idle.latencies))} / {_s(total_p95)}",
                f"min {_s(min(idle.latencies))}, max {_s(max(idle.latencies))}",
                "-",
                f"p95 < {TARGET_IDLE_P95:.0f} s",
                _ok(total_p95 < TARGET_IDLE_P95),
            ),
        ]
    if idle.missed:
        rows.append(
            ("IDLE: messages not stored within 30 s", str(idle.missed), "-", "-", "0", "NO")
        )
    return rows, ok


if __name__ == "__main__":
    sys.exit(main())
