#!/usr/bin/env python3
"""IMAP sync benchmark against the private Dovecot: full sync, incremental, IDLE, memory.

    make bench-imap
    python bench/imap_sync.py --messages 2000 --idle-samples 10   (services' env already set)

One run measures:

1. Seeding: a fresh Dovecot user whose INBOX gets N messages of a realistic mix (mostly 2-20 KB
   text or text+HTML mails, about 10% with a 50-500 KB attachment, some real messages from
   tests/data/corpus) plus one message with a --big-attachment-mb attachment. The files are
   written straight into the user's maildir (Dovecot indexes them on the first SELECT), and
   the server's EXISTS is checked.
2. Full sync (`ImapAccountSync.sync(full=True)`, fresh account) next to a bare imapclient
   download of the same messages (UID SEARCH ALL, UID FETCH BODY.PEEK[] by 100) and mbsync
   (isync) pulling the mailbox into a temporary maildir (median of 3 runs).
3. No-change incremental sync on accounts of 1k, 10k and N (at most 100k) messages, each
   seeded and fully synced first (those full syncs are timed too): median of 5.
4. IDLE delivery latency: an IdleWatcher on the 1k account triggers `imap_sync_account`;
   messages are APPENDed one at a time, from the end of the APPEND to the Message row.
5. Peak RSS of the worker doing the full sync of step 2 (a subprocess; it includes the big
   attachment).

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
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
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
from django.db import connection, transaction  # noqa: E402
from imapclient import IMAPClient  # noqa: E402

from messages.files import files_delete_unused_on_commit, message_files  # noqa: E402
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

TARGET_MBSYNC_RATIO = 3.0
TARGET_INCREMENTAL_RATIO = 1.5
TARGET_IDLE_P95 = 2.0
TARGET_PEAK_RSS_MB = 300


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
        missing = [
            name
            for name in ("IMAP_TEST_HOST", "IMAP_TEST_PORT", "DOVECOT_USERS_DIR", "DOVECOT_HOME")
            if not os.environ.get(name)
        ]
        if missing:
            raise SystemExit(
                f"{', '.join(missing)} not set: run under `scripts/devservices.py exec --temp --`"
                " (make bench-imap) or `source` the env of running services"
            )
        return cls(
            os.environ["IMAP_TEST_HOST"],
            int(os.environ["IMAP_TEST_PORT"]),
            Path(os.environ["DOVECOT_USERS_DIR"]),
            Path(os.environ["DOVECOT_HOME"]),
        )

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


def child_full_sync(account_id: int) -> int:
    """Subprocess mode: the full sync of step 2 with the process's own peak RSS."""
    account = Account.objects.get(pk=account_id)
    rss_before = _proc_status_kb("VmRSS")
    stats = measured_sync(account, full=True, label="[2] full sync")
    result = {
        **stats.__dict__,
        "rss_before_kb": rss_before,
        "vmhwm_kb": _proc_status_kb("VmHWM"),
    }
    print(CHILD_MARK + json.dumps(result), flush=True)
    return 0


def run_child_full_sync(account: Account) -> dict[str, Any]:
    connection.close()  # nothing shared with the child; reconnect afterwards
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--_child-full-sync", str(account.pk)],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(CHILD_MARK)]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"the full-sync subprocess failed ({proc.returncode}):\n{proc.stdout}")
    return json.loads(lines[-1][len(CHILD_MARK) :])


# Steps ------------------------------------------------------------------------------------------


def account_create(owner, user: DovecotUser) -> Account:
    return imap_account_create(
        owner=owner,
        data=ImapAccountInput(
            email_address=f"{user.username}@bench.invalid",
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

    @property
    def median(self) -> float:
        return statistics.median(r.seconds for r in self.runs)


def incremental_bench(dovecot: Dovecot, owner, size: int) -> IncrementalResult:
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
    return IncrementalResult(size, seeded, full, stored, runs, account, user)


def slowest_queries(runs: Sequence[SyncStats], top: int) -> list[tuple[float, str]]:
    """The TOP queries by median time over runs that issued the same queries in order."""
    per_position = zip(*(r.queries for r in runs), strict=False)
    timed = [(statistics.median(s for s, _ in qs), qs[0][1]) for qs in per_position]
    return sorted(timed, reverse=True)[:top]


@dataclass
class IdleResult:
    latencies: list[float]  # APPEND done -> row visible
    notify: list[float]  # APPEND done -> the watcher's trigger called (server notice + IDLE)
    missed: int
    triggers: int


def idle_bench(account: Account, user: DovecotUser, samples: int) -> IdleResult:
    """APPEND one message at a time while an IdleWatcher holds IDLE; time until its row."""
    started: list[float] = []
    finished: list[float] = []

    def trigger(account_id: int) -> None:
        started.append(time.perf_counter())
        imap_sync_account(account_id)
        finished.append(time.perf_counter())

    maker = MailMaker(f"{user.username}-idle", ())
    watcher = IdleWatcher(account.pk, trigger)
    watcher.start()
    latencies: list[float] = []
    notify: list[float] = []
    missed = 0
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
                syncs_before = len(started)
                client.append("INBOX", mail.raw, flags=[b"\\Seen"])
                appended = time.perf_counter()
                seen = _wait(
                    lambda mid=message_id: Message.objects.filter(
                        account_id=account.pk, message_id_header=mid
                    ).exists(),
                    30,
                    None,
                    interval=0.01,
                )
                if seen:
                    latencies.append(time.perf_counter() - appended)
                    if len(started) > syncs_before:
                        notify.append(started[syncs_before] - appended)
                else:
                    missed += 1
                # Start the next sample from an idling watcher: its sync is over, IDLE re-issued.
                _wait(lambda n=syncs_before: len(finished) > n, 30, None)
                time.sleep(0.05)
    finally:
        watcher.stop()
        watcher.join(timeout=40)
    return IdleResult(latencies, notify, missed, len(finished))


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
    owner = get_user_model().objects.filter(username=BENCH_USERNAME).first()
    if owner is None:
        return 0.0
    with transaction.atomic():
        messages = Message.objects.filter(account__owner=owner)
        files = message_files(messages)
        messages.delete()  # Message.thread is PROTECT: messages first
        owner.delete()
        files_delete_unused_on_commit(files)
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

    # 2. Full sync vs baselines (5. its peak RSS) -------------------------------------------
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
    account = account_create(owner, user)
    log(f"[2] full sync of {seeded.exists:,} messages in a subprocess ...")
    settle()
    child = run_child_full_sync(account)
    full = SyncStats(**{k: child[k] for k in SyncStats.__dataclass_fields__})
    stored = inbox_locations(account)
    log(
        f"[2] full sync {full.seconds:.1f}s: IMAP fetch {full.imap_fetch_seconds:.1f}s "
        f"(prefetch thread, overlapping the writer), "
        f"SQL {full.db_seconds:.1f}s in {full.db_queries:,} queries; {stored:,} stored"
    )
    complete = stored == seeded.exists and bare.messages == seeded.exists and full.done
    ok &= complete
    full_value = f"{_s(full.seconds)} ({_rate(stored, full.seconds)})"
    rows.append(
        (
            f"full sync {seeded.exists:,} msgs vs bare fetch",
            full_value,
            f"{_s(bare.seconds)} ({_rate(bare.messages, bare.seconds)})",
            f"{full.seconds / bare.seconds:.1f}x",
            "-",
            "-",
        )
    )
    if isinstance(mbsync, Download):
        ratio = full.seconds / mbsync.seconds
        rows.append(
            (
                f"full sync {seeded.exists:,} msgs vs mbsync",
                full_value,
                f"{_s(mbsync.seconds)}, median of {MBSYNC_RUNS}",
                f"{ratio:.1f}x",
                f"<= {TARGET_MBSYNC_RATIO:.0f}x",
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
        rows.append(("full sync vs mbsync", full_value, mbsync, "-", "-", "-"))
    rows.append(
        (
            "  full sync: IMAP fetch (prefetch thread) / SQL (writer)",
            f"{_s(full.imap_fetch_seconds)} / {_s(full.db_seconds)}",
            f"{full.db_queries:,} queries",
            "-",
            "-",
            "-",
        )
    )
    rows.append(
        (
            "  full sync: stored INBOX locations",
            f"{stored:,}",
            f"{seeded.exists:,} on server",
            "-",
            "equal",
            _ok(complete),
        )
    )
    peak_mb = child["vmhwm_kb"] / 1024
    rows.append(
        (
            f"peak worker RSS, full sync (incl. {args.big_attachment_mb} MB attachment)",
            f"{peak_mb:,.0f} MB",
            f"{child['rss_before_kb'] / 1024:,.0f} MB before sync",
            "-",
            f"< {TARGET_PEAK_RSS_MB} MB",
            _ok(peak_mb < TARGET_PEAK_RSS_MB),
        )
    )

    # 3. Incremental ------------------------------------------------------------------------
    sizes = sorted({1_000, 10_000, min(n, MAX_MESSAGES)})
    results = [incremental_bench(dovecot, owner, size) for size in sizes]
    for r in results:
        good = r.stored == r.seeded.exists == r.size
        ok &= good
        rows.append(
            (
                f"full sync {r.size:,} msgs (in process)",
                f"{_s(r.full.seconds)} ({_rate(r.stored, r.full.seconds)})",
                f"{r.full.db_queries:,} queries",
                "-",
                f"{r.size:,} stored",
                _ok(good),
            )
        )
    base = results[0]
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
    largest = results[-1]
    inc_ratio = largest.median / base.median
    rows.append(
        (
            f"incremental {largest.size:,} / {base.size:,}",
            _s(largest.median),
            _s(base.median),
            f"{inc_ratio:.2f}x",
            f"<= {TARGET_INCREMENTAL_RATIO}x",
            _ok(inc_ratio <= TARGET_INCREMENTAL_RATIO),
        )
    )

    # 4. IDLE ---------------------------------------------------------------------------------
    if args.idle_samples:
        log(f"[4] IDLE latency, {args.idle_samples} appends to the {base.size:,} account ...")
        idle = idle_bench(base.account, base.user, args.idle_samples)
        ok &= idle.missed == 0
        lat = sorted(idle.latencies)
        if lat:
            median = statistics.median(lat)
            p95 = _percentile(lat, 95)
            notify = statistics.median(idle.notify) if idle.notify else math.nan
            log(
                f"[4] IDLE median {median * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms;"
                f" of which APPEND -> trigger (server notice) median {notify * 1000:.0f} ms"
            )
            rows.append(
                (
                    f"IDLE delivery latency median ({len(lat)} msgs)",
                    _s(median),
                    f"APPEND->trigger {_s(notify)}",
                    "-",
                    "-",
                    "-",
                )
            )
            rows.append(
                (
                    "IDLE delivery latency p95",
                    _s(p95),
                    f"min {_s(lat[0])}, max {_s(lat[-1])}",
                    "-",
                    f"< {TARGET_IDLE_P95:.0f} s",
                    _ok(p95 < TARGET_IDLE_P95),
                )
            )
        if idle.missed:
            rows.append(
                ("IDLE: messages not stored within 30 s", str(idle.missed), "-", "-", "0", "NO")
            )
    return rows, ok


if __name__ == "__main__":
    sys.exit(main())
