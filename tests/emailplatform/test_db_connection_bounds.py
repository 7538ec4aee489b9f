"""Every long-running process holds a bounded number of database connections (README,
"Database connections"): the real sync worker, message worker and IDLE listener, under a load
of simultaneous full syncs and new mail heard through IDLE, counted in pg_stat_activity by the
application_name each process gives itself (emailplatform.dbnames)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest
from django.db import connection

from messages.models import Message
from messages.services import account_sync_request
from smtp_sync.idle_listener import POOL_THREADS
from tests.imap_fixtures import account_for, new_mail_server_user
from tests.mailfactory import make_mail
from tests.worker import ROOT, process_env, stop_worker, wait_for, worker_command

pytestmark = pytest.mark.django_db(transaction=True)

ACCOUNTS = 8
MESSAGES = 40
SYNC_CONCURRENCY = 3
MESSAGE_CONCURRENCY = 2


def celery_worker(node: str, queues: str, concurrency: int, log: Path) -> subprocess.Popen:
    return start(worker_command(node, queues, concurrency), log)


def start(command: list[str], log: Path) -> subprocess.Popen:
    out = open(log, "ab")  # noqa: SIM115  (kept open for the process' lifetime)
    env = process_env({"INGEST_DELIVERY": "queue", "INGEST_INLINE_MAX_MESSAGES": "0"})
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


class Sampler(threading.Thread):
    """The most connections each application_name held at once, sampled every 50 ms."""

    def __init__(self, db_name: str, exclude: tuple[int, ...] = ()) -> None:
        super().__init__(daemon=True)
        self.db = db_name
        self.exclude = list(exclude)  # backend pids not to count (the test's own)
        self.peak: dict[str, int] = defaultdict(int)
        self.peak_total = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT application_name, count(*) FROM pg_stat_activity"
                        " WHERE datname = %s AND pid <> pg_backend_pid()"
                        " AND NOT pid = ANY(%s) GROUP BY application_name",
                        [self.db, self.exclude],
                    )
                    rows = cursor.fetchall()
                for name, count in rows:
                    self.peak[name] = max(self.peak[name], count)
                self.peak_total = max(self.peak_total, sum(count for _name, count in rows))
                time.sleep(0.05)
        finally:
            connection.close()

    def snapshot(self) -> dict[str, int]:
        return dict(self.peak)


def test_each_process_holds_a_bounded_number_of_connections(user, dovecot, tmp_path):
    servers = [new_mail_server_user(dovecot) for _ in range(ACCOUNTS)]
    for index, server in enumerate(servers):
        server.append("INBOX", *[make_mail(f"a{index}-{i}") for i in range(MESSAGES)])
    accounts = [account_for(user, server) for server in servers]
    sampler = Sampler(connection.settings_dict["NAME"])
    procs = [
        celery_worker(
            "sync", "email_full_sync,smtp,gmail,default", SYNC_CONCURRENCY, tmp_path / "s.log"
        ),
        celery_worker("message", "email_new_message", MESSAGE_CONCURRENCY, tmp_path / "m.log"),
        start([sys.executable, "manage.py", "imap_idle"], tmp_path / "idle.log"),
    ]
    sampler.start()
    try:
        for account in accounts:
            account_sync_request(account=account, full=True)
        wait_for(
            lambda: Message.objects.count() == ACCOUNTS * MESSAGES,
            timeout=240,
            what="every full sync stored",
        )
        # New mail in every mailbox at once: the listener hears it and the syncs run again.
        for index, server in enumerate(servers):
            server.append("INBOX", make_mail(f"new{index}"))
        wait_for(
            lambda: Message.objects.count() == ACCOUNTS * (MESSAGES + 1),
            timeout=120,
            what="the new mail stored (IDLE)",
        )
        under_load = sampler.snapshot()
        sampler.peak.clear()
        time.sleep(5)  # quiet: the listener idles, the workers wait for tasks
        quiet = sampler.snapshot()
    finally:
        sampler.stopping.set()
        sampler.join(10)
        for proc in procs:
            stop_worker(proc)
        connection.close()

    print("peak connections under load:", dict(sorted(under_load.items())))
    print("peak connections when quiet:", dict(sorted(quiet.items())))
    # A prefork worker: one per pool process, plus its main process (the sync watchdog's tick).
    assert 1 <= under_load.get("emailplatform:worker:sync", 0) <= SYNC_CONCURRENCY + 1
    assert 1 <= under_load.get("emailplatform:worker:message", 0) <= MESSAGE_CONCURRENCY + 1
    # The IDLE listener: its pool's threads at most (the account list's refresh, the
    # triggers), however many accounts connect or hear mail together; none held while it
    # idles. Its connections last a query each, so the sampler may well see none of them;
    # that it ran shows in the syncs its triggers started (above).
    assert under_load.get("emailplatform:imap_idle", 0) <= POOL_THREADS
    assert quiet.get("emailplatform:imap_idle", 0) <= 1  # a refresh may fall in the window
