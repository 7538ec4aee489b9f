#!/usr/bin/env python3
"""Many accounts at once: N Dovecot users with small mailboxes, every full sync started by the
beat job, consumed by real Celery workers in `make run`'s layout.

    make bench-many-accounts
    make bench-many-accounts BENCH_ARGS="--accounts 100,300"
    python bench/many_accounts.py --accounts 100,300,1000 --messages 20   (services' env set)

For each N of --accounts: N fresh accounts (one per Dovecot user `bmany...`, --messages small
text mails each, written into the maildir and indexed by a first SELECT), a sync worker
(`-Q email_full_sync,smtp,gmail,celery`, SYNC_WORKER_CONCURRENCY, default 4) and a message
worker (`-Q email_new_message`, MESSAGE_WORKER_CONCURRENCY, default the CPU count) started as
`scripts/run_platform.py` starts them; then the beat job's task (`messages.schedule_full_syncs`,
what the `django_celery_beat` schedule sends) is sent once, and the clock runs until every
account has a succeeded full sync run and no run is left running.

Checked and printed per N: all complete (none failed, none stuck), nothing duplicated (per
account: the store's INBOX UIDs equal the server's, one message per UID, one per Message-ID;
no sync task left queued once all are done, no sync run beyond one full run per account),
peak RSS of the worker processes (sum over the trees, sampled; and the largest VmHWM), Redis'
used_memory peak over its baseline, peak database connections by application_name
(pg_stat_activity, sampled), time and time per account, and the ratio against the first N.
Then throughput (messages stored per second) at --throughput-accounts with 1 and 2
message-worker processes. The machine's load average is printed with the figures: on a shared
machine they move with it.

Bench data: the Django users `bench-many-*` and the Dovecot users `bmany...` (removed after the
run unless --keep). The database is migrated first.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
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
from django.db import connection, connections  # noqa: E402
from django.db.models import Count  # noqa: E402
from imapclient import IMAPClient  # noqa: E402

from bench.benchdata import bench_user_remove, dovecot_env  # noqa: E402
from bench.message_workers import BenchWorker  # noqa: E402
from emailplatform import syncstate, topics  # noqa: E402
from emailplatform.celery import app  # noqa: E402
from messages.models import Message, MessageLocation, SyncRun  # noqa: E402
from smtp_sync.accounts import (  # noqa: E402
    ImapAccountInput,
    imap_account_create,
    imap_connection_test,
)

BENCH_PREFIX = "bench-many"
DOVECOT_PREFIX = "bmany"
BASE_TIMESTAMP = 1_700_000_000
SAMPLE_INTERVAL = 0.25


def log(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


# Dovecot users ----------------------------------------------------------------------------------


@dataclass
class Mailbox:
    username: str
    password: str
    home: Path
    uids: frozenset[int] = frozenset()


@dataclass
class Dovecot:
    host: str
    port: int
    users_dir: Path
    home_dir: Path
    created: list[Mailbox] = field(default_factory=list)

    def owner(self) -> tuple[int, int] | None:
        if os.geteuid() != 0:
            return None
        st = self.home_dir.stat()
        return st.st_uid, st.st_gid

    def mailbox_create(self, messages: int) -> Mailbox:
        username = f"{DOVECOT_PREFIX}{uuid.uuid4().hex[:12]}"
        box = Mailbox(username, uuid.uuid4().hex, self.home_dir / username)
        (self.users_dir / username).write_text(f"{username}:{{PLAIN}}{box.password}\n")
        self.created.append(box)
        self._seed(box, messages)
        with IMAPClient(self.host, port=self.port, ssl=False, timeout=60) as client:
            client.login(box.username, box.password)
            client.select_folder("INBOX", readonly=True)  # Dovecot indexes the files now
            box.uids = frozenset(client.search("ALL"))
        return box

    def _seed(self, box: Mailbox, count: int) -> None:
        owner = self.owner()
        maildir = box.home / "Maildir"
        for path in (box.home, maildir, maildir / "cur", maildir / "new", maildir / "tmp"):
            path.mkdir(mode=0o700, exist_ok=True)
            if owner:
                os.chown(path, *owner)
        for seq in range(count):
            ts = BASE_TIMESTAMP + seq * 300
            raw = _mail(box.username, seq, ts)
            path = (
                maildir
                / "cur"
                / f"{ts}.M{seq:06d}P{os.getpid()}.bench,S={len(raw)},W={len(raw)}:2,S"
            )
            path.write_bytes(raw)
            os.utime(path, (ts, ts))
            if owner:
                os.chown(path, *owner)

    def remove_created(self) -> None:
        for box in self.created:
            (self.users_dir / box.username).unlink(missing_ok=True)
            shutil.rmtree(box.home, ignore_errors=True)
        self.created.clear()


def _mail(username: str, seq: int, ts: int) -> bytes:
    """A small text mail (about 1.5 KB), CRLF line ends (so W= equals S=)."""
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(ts))
    body = "\r\n".join(
        f"Line {i} of message {seq} for {username}: the quick brown fox jumps over the lazy dog."
        for i in range(15)
    )
    head = (
        f"From: Sender {seq % 7} <sender{seq % 7}@bench.invalid>\r\n"
        f"To: {username}@bench.invalid\r\n"
        f"Subject: Message {seq} of {username}\r\n"
        f"Date: {date}\r\n"
        f"Message-ID: <{seq}.{username}@bench.invalid>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    return (head + body + "\r\n").encode()


# Workers ----------------------------------------------------------------------------------------


class Worker(BenchWorker):
    """A Celery worker started as `scripts/run_platform.py` starts it, batches through the
    queue."""

    def __init__(self, label: str, queues: tuple[str, ...], concurrency: int, log_path: Path):
        env = {"INGEST_DELIVERY": "queue"}
        super().__init__(queues, concurrency, log_path, env, label=label)

    def rss_kb(self) -> tuple[int, int]:
        """(sum of RSS over the tree, largest VmHWM of one process)."""
        stats = self.stats()
        return sum(s.rss_kb for s in stats), max((s.peak_rss_kb for s in stats), default=0)


class Sampler(threading.Thread):
    """Every SAMPLE_INTERVAL: the workers' RSS, Redis' used_memory, and the database connections
    by application_name (this sampler's own left out)."""

    def __init__(self, workers: list[Worker]) -> None:
        super().__init__(name="sampler", daemon=True)
        self.workers = workers
        self.redis = redis.Redis.from_url(settings.REDIS_URL)
        self.redis_baseline = self.redis_peak = int(self.redis.info("memory")["used_memory"])
        self.rss_peak_kb = 0
        self.hwm_kb = 0
        self.db_peak: Counter[str] = Counter()
        self.db_total_peak = 0
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            while not self._halt.wait(SAMPLE_INTERVAL):
                self.sample()
        finally:
            connections.close_all()

    def sample(self) -> None:
        rss = 0
        for worker in self.workers:
            total, hwm = worker.rss_kb()
            rss += total
            self.hwm_kb = max(self.hwm_kb, hwm)
        self.rss_peak_kb = max(self.rss_peak_kb, rss)
        try:
            used = int(self.redis.info("memory")["used_memory"])
            self.redis_peak = max(self.redis_peak, used)
        except redis.RedisError:
            pass
        with connections["default"].cursor() as cursor:
            cursor.execute(
                "SELECT application_name, count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " GROUP BY application_name"
            )
            rows = dict(cursor.fetchall())
        for name, count in rows.items():
            self.db_peak[name or "?"] = max(self.db_peak[name or "?"], count)
        self.db_total_peak = max(self.db_total_peak, sum(rows.values()))

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


# One run ----------------------------------------------------------------------------------------


@dataclass
class Run:
    accounts: int
    message_processes: int
    seconds: float
    messages: int
    succeeded: int
    failed: int
    stuck: int
    other_runs: int
    left_in_queue: int
    mismatched: list[str]
    rss_peak_kb: int
    hwm_kb: int
    redis_growth: int
    db_peak: dict[str, int]
    db_total_peak: int
    load: tuple[float, float, float]


def accounts_create(owner, dovecot: Dovecot, boxes: list[Mailbox]) -> list[tuple[int, Mailbox]]:
    capabilities = None
    made = []
    for box in boxes:
        data = ImapAccountInput(
            email_address=f"{box.username}@bench.invalid",
            imap_host=dovecot.host,
            imap_port=dovecot.port,
            imap_security="none",
            username=box.username,
            password=box.password,
        )
        if capabilities is None:
            capabilities = imap_connection_test(data.server())  # the rest share the server
        account = imap_account_create(
            owner=owner,
            data=data,
            test_connection=False,
            start_sync=False,
            capabilities=capabilities,
        )
        made.append((account.pk, box))
    return made


def store_check(made: list[tuple[int, Mailbox]]) -> list[str]:
    """Accounts whose store differs from the server: '<account>: why'."""
    ids = [pk for pk, _ in made]
    uids: dict[int, list[int]] = {pk: [] for pk in ids}
    for account_id, uid in MessageLocation.objects.filter(
        message__account_id__in=ids, folder__name="INBOX", uid__isnull=False
    ).values_list("message__account_id", "uid"):
        uids[account_id].append(uid)
    per_message_id = Counter()
    for row in (
        Message.objects.filter(account_id__in=ids)
        .values("account_id", "message_id_header")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
    ):
        per_message_id[row["account_id"]] += 1
    messages = dict(
        Message.objects.filter(account_id__in=ids)
        .values("account_id")
        .annotate(n=Count("id"))
        .values_list("account_id", "n")
    )
    wrong = []
    for pk, box in made:
        got = uids[pk]
        if len(got) != len(set(got)):
            wrong.append(f"{pk}: a UID stored twice")
        elif set(got) != box.uids:
            wrong.append(f"{pk}: {len(set(got))} UIDs stored, {len(box.uids)} on the server")
        elif messages.get(pk, 0) != len(box.uids):
            wrong.append(f"{pk}: {messages.get(pk, 0)} messages for {len(box.uids)} UIDs")
        elif per_message_id[pk]:
            wrong.append(f"{pk}: {per_message_id[pk]} Message-IDs stored twice")
    return wrong


def queued_tasks_purge() -> int:
    """Sync tasks still queued once every account is done (copies of requests already served),
    removed so that the next run starts on empty queues."""
    left = 0
    with app.connection_for_write() as conn:
        for queue in topics.SYNC_WORKER_QUEUES:
            left += conn.default_channel.queue_purge(queue) or 0
    return left


def one_run(
    dovecot: Dovecot,
    boxes: list[Mailbox],
    message_processes: int,
    sync_concurrency: int,
    timeout: float,
    log_dir: Path,
) -> Run:
    username = f"{BENCH_PREFIX}-{len(boxes)}-{message_processes}"
    bench_user_remove(username)
    owner = get_user_model().objects.create_user(username, f"{username}@bench.invalid")
    started = time.perf_counter()
    made = accounts_create(owner, dovecot, boxes)
    log(f"{len(made)} accounts created in {time.perf_counter() - started:.1f}s")
    tag = f"{len(boxes)}-{message_processes}"
    workers = [
        Worker("sync", topics.SYNC_WORKER_QUEUES, sync_concurrency, log_dir / f"sync-{tag}.log"),
        Worker(
            "message",
            topics.MESSAGE_WORKER_QUEUES,
            message_processes,
            log_dir / f"message-{tag}.log",
        ),
    ]
    ids = [pk for pk, _ in made]
    try:
        for worker in workers:
            worker.start()
        connection.close()
        sampler = Sampler(workers)
        sampler.sample()
        sampler.start()
        start = time.perf_counter()
        app.send_task(topics.TASK_SCHEDULE_FULL_SYNCS)  # what beat sends on its schedule
        succeeded = failed = running = 0
        deadline = start + timeout
        last_report = start
        while time.perf_counter() < deadline:
            runs = SyncRun.objects.filter(account_id__in=ids, kind=SyncRun.Kind.FULL)
            succeeded = (
                runs.filter(status=SyncRun.Status.SUCCEEDED).values("account_id").distinct().count()
            )
            failed = (
                runs.filter(status=SyncRun.Status.FAILED).values("account_id").distinct().count()
            )
            running = runs.filter(status=SyncRun.Status.RUNNING).count()
            if succeeded + failed >= len(ids) and running == 0:
                break
            if time.perf_counter() - last_report > 15:
                last_report = time.perf_counter()
                log(f"  {succeeded}/{len(ids)} done, {running} running, {failed} failed")
            time.sleep(0.2)
        seconds = time.perf_counter() - start
        sampler.stop()
        left = queued_tasks_purge()
    finally:
        for worker in workers:
            worker.stop()
    stuck = len(ids) - succeeded - failed
    run = Run(
        accounts=len(ids),
        message_processes=message_processes,
        seconds=seconds,
        messages=Message.objects.filter(account_id__in=ids).count(),
        succeeded=succeeded,
        failed=failed,
        stuck=stuck,
        left_in_queue=left,
        other_runs=SyncRun.objects.filter(account_id__in=ids).count() - succeeded,
        mismatched=store_check(made),
        rss_peak_kb=sampler.rss_peak_kb,
        hwm_kb=sampler.hwm_kb,
        redis_growth=sampler.redis_peak - sampler.redis_baseline,
        db_peak=dict(sampler.db_peak),
        db_total_peak=sampler.db_total_peak,
        load=os.getloadavg(),
    )
    bench_user_remove(username)  # the next beat job schedules only the next run's accounts
    return run


# Output -----------------------------------------------------------------------------------------


def print_runs(scaling: list[Run], throughput: list[Run]) -> bool:
    ok = True
    first = scaling[0] if scaling else None
    print()
    print(
        f"{'accounts':>8} {'msg procs':>9} {'time s':>8} {'ms/account':>10} {'ratio':>6}"
        f" {'done':>6} {'failed':>6} {'stuck':>5} {'other':>5} {'left':>5} {'wrong':>5}"
        f" {'RSS MB':>7}"
        f" {'max proc':>8} {'Redis +MB':>9} {'DB conns':>8} {'load 1/5/15':>14}"
    )
    for run in [*scaling, *throughput]:
        per = run.seconds / run.accounts
        ratio = per / (first.seconds / first.accounts) if first else 1.0
        good = run.stuck == 0 and run.failed == 0 and not run.mismatched
        good = good and run.left_in_queue == 0
        ok = ok and good
        print(
            f"{run.accounts:>8} {run.message_processes:>9} {run.seconds:>8.1f} {per * 1000:>10.1f}"
            f" {ratio:>6.2f} {run.succeeded:>6} {run.failed:>6} {run.stuck:>5}"
            f" {run.other_runs:>5} {run.left_in_queue:>5}"
            f" {len(run.mismatched):>5} {run.rss_peak_kb / 1024:>7.0f} {run.hwm_kb / 1024:>8.0f}"
            f" {run.redis_growth / 2**20:>9.1f} {run.db_total_peak:>8}"
            f" {'/'.join(f'{v:.1f}' for v in run.load):>14}"
        )
        for line in run.mismatched[:5]:
            print(f"           wrong: {line}")
    print()
    print("Peak database connections by application_name:")
    for run in [*scaling, *throughput]:
        names = ", ".join(f"{k}={v}" for k, v in sorted(run.db_peak.items()))
        print(f"  {run.accounts} accounts, {run.message_processes} message procs: {names}")
    if throughput:
        print()
        print("Throughput (messages stored per second, beat job to last run done):")
        for run in throughput:
            print(
                f"  {run.message_processes} message-worker process(es): {run.messages} messages"
                f" in {run.seconds:.1f}s = {run.messages / run.seconds:.0f} msg/s,"
                f" {run.accounts / run.seconds:.1f} accounts/s"
            )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", default="100,300,1000", help="sizes, comma-separated")
    parser.add_argument("--messages", type=int, default=20, help="messages per mailbox (20)")
    parser.add_argument(
        "--throughput-accounts",
        type=int,
        default=None,
        help="accounts for the 1 vs 2 message-worker run (default: the smallest size; 0: skip)",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run (1800)")
    parser.add_argument("--keep", action="store_true", help="keep the bench data afterwards")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.accounts.split(",") if s.strip()]
    if not sizes or min(sizes) < 1 or args.messages < 1:
        parser.error("--accounts and --messages must be positive")
    through = min(sizes) if args.throughput_accounts is None else args.throughput_accounts
    sync_concurrency = int(os.environ.get("SYNC_WORKER_CONCURRENCY", "4"))
    message_concurrency = int(
        os.environ.get("MESSAGE_WORKER_CONCURRENCY", str(os.cpu_count() or 1))
    )

    dovecot = Dovecot(*dovecot_env("make bench-many-accounts"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    call_command("migrate", verbosity=0)
    # A running deployment's Redis is not new: without this, the first worker's watchdog would
    # request an incremental sync of every account ("Redis restarted") in the middle of run 1.
    syncstate.epoch_is_new()
    log_dir = Path(os.environ.get("BENCH_LOG_DIR", "") or Path.cwd() / ".local" / "bench-many")
    log_dir.mkdir(parents=True, exist_ok=True)
    wall = time.perf_counter()
    load_before = os.getloadavg()
    scaling: list[Run] = []
    throughput: list[Run] = []
    try:
        need = max([*sizes, through])
        start = time.perf_counter()
        boxes = [dovecot.mailbox_create(args.messages) for _ in range(need)]
        log(
            f"{need} Dovecot users x {args.messages} messages in {time.perf_counter() - start:.0f}s"
        )
        for n in sizes:
            log(f"{n} accounts, {message_concurrency} message-worker processes ...")
            scaling.append(
                one_run(
                    dovecot, boxes[:n], message_concurrency, sync_concurrency, args.timeout, log_dir
                )
            )
        if through:
            for procs in (1, 2):
                same = [
                    r for r in scaling if r.accounts == through and r.message_processes == procs
                ]
                if same:
                    throughput.append(same[0])
                    continue
                log(f"throughput: {through} accounts, {procs} message-worker process(es) ...")
                throughput.append(
                    one_run(
                        dovecot, boxes[:through], procs, sync_concurrency, args.timeout, log_dir
                    )
                )
    finally:
        if not args.keep:
            connection.close()
            for n in {*sizes, through}:
                for procs in {1, 2, message_concurrency}:
                    bench_user_remove(f"{BENCH_PREFIX}-{n}-{procs}")
            dovecot.remove_created()
    print()
    print(
        f"Many accounts: {','.join(map(str, sizes))} accounts x {args.messages} messages, all"
        f" full syncs started by one beat job; sync worker concurrency {sync_concurrency},"
        f" message worker {message_concurrency}; {time.perf_counter() - wall:.0f} s in all"
    )
    print(f"  Python {platform.python_version()}, {os.cpu_count()} CPUs (shared with other work)")
    print(
        f"  load average 1/5/15 min {'/'.join(f'{v:.2f}' for v in load_before)} before,"
        f" {'/'.join(f'{v:.2f}' for v in os.getloadavg())} after"
    )
    ok = print_runs(scaling, throughput)
    print()
    print("all complete, nothing duplicated" if ok else "FAILED: see the rows above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
