"""The platform behind pgbouncer in transaction pooling mode (docker-compose's `pgbouncer`
profile): real sync and message workers, whose processes open more client connections than the
pool has server connections, sync mailboxes completely, and PostgreSQL sees no more connections
than the pool's size. Debian's pgbouncer (scripts/bootstrap.sh installs it), run by the test."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from django.db import connection

from messages.models import Message, MessageLocation
from messages.services import account_sync_request
from tests.emailplatform.test_db_connection_bounds import Sampler
from tests.imap_fixtures import account_for, new_mail_server_user
from tests.mailfactory import make_mail
from tests.worker import ROOT, free_port, process_env, stop_worker, wait_for, worker_command

pytestmark = pytest.mark.django_db(transaction=True)

POOL_SIZE = 2
ACCOUNTS = 3
MESSAGES = 30

CONFIG = """\
[databases]
{db} = host={host} port={port} dbname={db}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {dir}/userlist.txt
pool_mode = transaction
default_pool_size = {pool}
reserve_pool_size = 0
max_client_conn = 200
server_reset_query =
ignore_startup_parameters = extra_float_digits
logfile = {dir}/pgbouncer.log
pidfile = {dir}/pgbouncer.pid
"""


@pytest.fixture
def pgbouncer():
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not os.path.exists(binary):
        pytest.fail("pgbouncer is not installed: run scripts/bootstrap.sh (Debian's pgbouncer)")
    db = connection.settings_dict
    directory = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
    os.chmod(directory, 0o755)  # noqa: S103  (pgbouncer drops to the service user below)
    listen = free_port()
    (directory / "userlist.txt").write_text(f'"{db["USER"]}" "{db["PASSWORD"]}"\n')
    (directory / "pgbouncer.ini").write_text(
        CONFIG.format(
            db=db["NAME"],
            host=db["HOST"],
            port=db["PORT"],
            listen=listen,
            dir=directory,
            pool=POOL_SIZE,
        )
    )
    command = [binary, str(directory / "pgbouncer.ini")]
    if os.geteuid() == 0:  # it refuses to run as root
        os.chown(directory, *_service_ids())
        for name in directory.iterdir():
            os.chown(name, *_service_ids())
        command[1:1] = ["-u", "emailplatform"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _listening(listen), timeout=15, what="pgbouncer listening")
        user = db["USER"]
        yield f"postgres://{user}:{db['PASSWORD']}@127.0.0.1:{listen}/{db['NAME']}"
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


def _service_ids() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam("emailplatform")
    return entry.pw_uid, entry.pw_gid


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def worker(node: str, queues: str, concurrency: int, log: Path, database_url: str):
    command = worker_command(node, queues, concurrency)
    env = process_env(
        {
            "DATABASE_URL": database_url,
            "DB_TRANSACTION_POOLING": "1",
            "INGEST_DELIVERY": "queue",
            "INGEST_INLINE_MAX_MESSAGES": "0",
        }
    )
    out = open(log, "ab")  # noqa: SIM115  (kept open for the process' lifetime)
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def test_full_syncs_through_transaction_pooling(user, dovecot, pgbouncer, tmp_path):
    servers = [new_mail_server_user(dovecot) for _ in range(ACCOUNTS)]
    for index, server in enumerate(servers):
        server.append("INBOX", *[make_mail(f"p{index}-{i}") for i in range(MESSAGES)])
    accounts = [account_for(user, server) for server in servers]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        own = cursor.fetchone()[0]
    sampler = Sampler(connection.settings_dict["NAME"], exclude=(own,))
    procs = [
        worker("sync", "email_full_sync,smtp,gmail,default", 3, tmp_path / "s.log", pgbouncer),
        worker("message", "email_new_message", 2, tmp_path / "m.log", pgbouncer),
    ]
    sampler.start()
    try:
        for account in accounts:
            account_sync_request(account=account, full=True)
        wait_for(
            lambda: Message.objects.count() == ACCOUNTS * MESSAGES,
            timeout=240,
            what="every full sync stored through pgbouncer",
        )
        time.sleep(1)
    finally:
        sampler.stopping.set()
        sampler.join(10)
        for proc in procs:
            stop_worker(proc)
        connection.close()
    for account in accounts:
        uids = list(MessageLocation.objects.filter(folder__account=account).values_list("uid"))
        assert len(uids) == len(set(uids)) == MESSAGES
    # PostgreSQL saw the pool, not the processes: 3 + 2 pool processes and 2 main processes
    # could hold 7 client connections; pgbouncer lent them POOL_SIZE server connections.
    print("peak server connections:", sampler.peak_total, dict(sampler.peak))
    assert 1 <= sampler.peak_total <= POOL_SIZE
