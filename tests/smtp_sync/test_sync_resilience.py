"""Issue 14: no sync trigger is ever lost, nothing waits for the poll, runs of dead passes are
reaped, and a login refused for now is told from a wrong password. Against the real Dovecot,
PostgreSQL and Redis, with the production lock TTL and watchdog timings."""

from __future__ import annotations

import contextlib
import os
import socket
import socketserver
import threading
import time
from pathlib import Path

import pytest
from django.db import OperationalError
from django.utils import timezone

from emailplatform import syncstate, topics
from messages.models import Account, SyncRun
from messages.selectors import account_list
from smtp_sync import watchdog
from smtp_sync.imap import ImapAuthError, ImapLoginDeferred, login_refusal_is_temporary
from smtp_sync.services import imap_sync_account
from smtp_sync.sync import ImapAccountSync
from smtp_sync.tasks import auth_retest, full_sync, incremental_sync
from tests.imap_fixtures import account_for, assert_store_matches_server
from tests.mailfactory import make_mail
from tests.messages.api.conftest import queued

pytestmark = pytest.mark.django_db(transaction=True)

QUEUES = (topics.QUEUE_FULL_SYNC, topics.QUEUE_SMTP, topics.QUEUE_DEFAULT)


def mails(prefix: str, count: int) -> list[bytes]:
    return [
        make_mail(f"{prefix} {i}", message_id=f"<{prefix}-{i}@example.org>", minutes=i)
        for i in range(count)
    ]


@pytest.fixture(autouse=True)
def clean_redis():
    """Empty queues, and Redis' epoch already seen (no catch-up round of the watchdog)."""
    client = syncstate.client()
    for name in QUEUES:
        client.delete(name)
    for key in client.scan_iter(f"{syncstate.PREFIX}:*"):
        client.delete(key)
    syncstate.epoch_is_new()
    yield
    for name in QUEUES:
        client.delete(name)


@pytest.fixture
def seeded(imap_user):
    imap_user.append("INBOX", *mails("inbox", 12))
    imap_user.append("Archive", *mails("old", 6), flags=("\\Seen",))
    return imap_user


def runs(account) -> list[tuple[str, str]]:
    return list(
        SyncRun.objects.filter(account=account).order_by("id").values_list("kind", "status")
    )


def run_queued_tasks() -> list[dict]:
    """Run what waits on the sync queues, in order, until nothing is left."""
    outcomes = []
    while True:
        tasks = [task for name in QUEUES[:2] for task in queued(name)]
        if not tasks:
            return outcomes
        for name, args in tasks:
            task = {
                full_sync.name: full_sync,
                incremental_sync.name: incremental_sync,
                auth_retest.name: auth_retest,
            }[name]
            outcomes.append(task.apply(args=args).get())


# Coalescing ------------------------------------------------------------------------------
def test_ten_concurrent_triggers_make_one_run(imap_account, seeded):
    for _ in range(5):
        topics.publish_sync(imap_account.pk, "imap", kind="full")
        topics.publish_sync(imap_account.pk, "imap", kind="incremental")
    full = queued(topics.QUEUE_FULL_SYNC)
    incremental = queued(topics.QUEUE_SMTP)
    assert len(full) == len(incremental) == 1, "one task per route, whatever the triggers"
    [(_, full_args)] = full
    [(_, incremental_args)] = incremental

    # The first task to run takes both requests: one full pass, started at once.
    assert full_sync.apply(args=full_args).get()["passes"] == 1
    assert incremental_sync.apply(args=incremental_args).get() == {"nothing to do": True}
    assert runs(imap_account) == [("full", "succeeded")]
    assert_store_matches_server(imap_account, seeded)


def test_a_trigger_during_a_sync_runs_once_more_at_its_end(imap_account, seeded):
    asked = []

    def during_the_pass(done: int, total: int) -> None:
        if not asked:  # the server changes mid-sync, and IDLE (say) asks for a sync
            seeded.append("INBOX", *mails("late", 3))
            asked.append(topics.sync_request_now(imap_account.pk, "imap", kind="incremental"))

    report = imap_sync_account(imap_account.pk, full=True, progress=during_the_pass)
    assert asked == [False], "the sync runs: the request is left for it, nothing is queued"
    assert report.passes == 2 and report.done
    assert runs(imap_account) == [("full", "succeeded"), ("incremental", "succeeded")]
    assert all(not queued(name) for name in QUEUES)
    assert_store_matches_server(imap_account, seeded)


def test_a_stale_redelivered_task_does_nothing(imap_account, seeded):
    topics.publish_sync(imap_account.pk, "imap", kind="full")
    [(_, args)] = queued(topics.QUEUE_FULL_SYNC)
    full_sync.apply(args=args).get()
    # Redis re-delivers the same message (its worker died before acknowledging it).
    assert full_sync.apply(args=args).get() == {"nothing to do": True}
    assert runs(imap_account) == [("full", "succeeded")]


def test_a_paused_full_sync_continues_through_its_requests(
    imap_account, seeded, monkeypatch, settings
):
    import dataclasses
    import functools

    from smtp_sync import services, tasks

    settings.IMAP_FETCH_BATCH = 2
    # Every chunk pauses at its checkpoint after 4 messages.
    chunk = functools.partial(services.imap_sync_account, max_messages=4)
    monkeypatch.setattr(tasks, "SYNC_TASKS", dataclasses.replace(tasks.SYNC_TASKS, sync=chunk))
    topics.publish_sync(imap_account.pk, "imap", kind="full")
    outcomes = run_queued_tasks()
    assert len(outcomes) > 2 and outcomes[-1]["done"]
    assert_store_matches_server(imap_account, seeded)
    assert not syncstate.wants(imap_account.pk)
    # Each chunk is a run of the full sync, whose progress goes on where the last stopped.
    chunks = SyncRun.objects.filter(account=imap_account).order_by("id")
    assert {run.kind for run in chunks} == {"full"}
    assert [run.progress_done for run in chunks] == [4, 8, 12, 16, 18]
    assert {run.progress_total for run in chunks} == {18}


# Dead passes -----------------------------------------------------------------------------
def test_watchdog_reaps_a_dead_run_and_resumes_its_work(imap_account, seeded, user, settings):
    settings.IMAP_FETCH_BATCH = 2
    calls = []

    def database_gone():
        calls.append(1)
        if len(calls) == 3:
            raise OperationalError("server closed the connection unexpectedly")

    account = Account.objects.get(pk=imap_account.pk)
    with pytest.raises(OperationalError):
        ImapAccountSync(account, after_batch=database_gone).sync(full=True)
    [run] = SyncRun.objects.filter(account=account)
    assert run.status == "running", "the pass could not be marked: it looks alive"
    assert account_list(user=user).get(pk=account.pk).running_sync_kind == "full"

    assert watchdog.watchdog_tick()["reaped"] == [], "first seen without a lock: suspect"
    time.sleep(watchdog.SUSPECT_SECONDS + 0.5)
    assert watchdog.watchdog_tick()["reaped"] == [run.pk]
    run.refresh_from_db()
    assert run.status == "interrupted"
    assert account_list(user=user).get(pk=account.pk).running_sync_kind is None

    [(name, [payload])] = queued(topics.QUEUE_FULL_SYNC)
    assert payload["continuation"] is True, "the rest of the full pass, on the full queue"
    full_sync.apply(args=[payload]).get()
    assert_store_matches_server(imap_account, seeded)


def test_a_live_sync_is_not_reaped(imap_account, seeded, settings):
    settings.IMAP_FETCH_BATCH = 2
    reaped = []

    def tick_meanwhile(done: int, total: int) -> None:
        if done == 4:
            watchdog.watchdog_tick()
            time.sleep(watchdog.SUSPECT_SECONDS + 0.5)
            reaped.extend(watchdog.watchdog_tick()["reaped"])

    report = imap_sync_account(imap_account.pk, full=True, progress=tick_meanwhile)
    assert report.done and reaped == []
    assert runs(imap_account) == [("full", "succeeded")]


def test_a_sync_holding_the_lock_interrupts_older_running_runs(imap_account, seeded):
    stale = SyncRun.objects.create(account=imap_account, kind="full", progress_total=6000)
    imap_sync_account(imap_account.pk)
    stale.refresh_from_db()
    assert stale.status == "interrupted"


def test_orphan_requests_are_enqueued_by_the_watchdog(imap_account, seeded):
    # A request whose task a dead worker swallowed: its queued marker has expired.
    syncstate.want(imap_account.pk, syncstate.FULL)
    assert watchdog.watchdog_tick()["requeued"] == [imap_account.pk]
    run_queued_tasks()
    assert runs(imap_account) == [("full", "succeeded")]
    assert_store_matches_server(imap_account, seeded)


def test_redis_that_lost_its_data_gets_a_catch_up_round(imap_account, seeded):
    syncstate.client().delete(syncstate.EPOCH_KEY)
    assert watchdog.watchdog_tick()["catch_up"] == 1
    run_queued_tasks()
    assert_store_matches_server(imap_account, seeded)


# Infrastructure errors -------------------------------------------------------------------
def test_a_sync_failing_on_a_database_error_is_retried(imap_account, seeded, monkeypatch):
    from smtp_sync import sync as sync_module

    real = sync_module.account_mark_ok
    failures = []

    def flaky(account):
        if not failures:
            failures.append(1)
            raise OperationalError("the database restarted")
        real(account)

    monkeypatch.setattr(sync_module, "account_mark_ok", flaky)
    outcome = incremental_sync.apply(args=[imap_account.pk]).get()  # retried eagerly
    assert failures == [1] and outcome["done"]
    assert_store_matches_server(imap_account, seeded)
    account = Account.objects.get(pk=imap_account.pk)
    assert (account.status, account.last_error) == ("active", "")


# Logins ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("answer", "temporary"),
    [
        ("[UNAVAILABLE] Temporary authentication failure. [host:2026-11-30]", True),
        ("[LIMIT] Too many connections", True),
        ("[INUSE] Mailbox in use", True),
        ("[SERVERBUG] Internal error", True),
        ("[ALERT] Too many simultaneous connections. (Failure)", True),
        ("[AUTHENTICATIONFAILED] Authentication failed.", False),
        ("[AUTHORIZATIONFAILED] No such authorization-ID", False),
        ("[EXPIRED] That password is no longer valid", False),
        ("[PRIVACYREQUIRED] Connection is not secure", False),
        ("[CONTACTADMIN] Account locked", False),
        ("Invalid credentials (Failure)", False),
        ("LOGIN failed.", False),
    ],
)
def test_login_refusals_are_told_apart(answer, temporary):
    assert login_refusal_is_temporary(answer) is temporary


class RefusingImap:
    """A real IMAP server on loopback that refuses logins as told (one mode per connection:
    "unavailable", "limit", "drop", or "proxy" to the real Dovecot), then proxies the rest."""

    def __init__(self, upstream: tuple[str, int], modes: list[str]) -> None:
        self.modes = list(modes)
        self.upstream = upstream
        fake = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                mode = fake.modes.pop(0) if fake.modes else "proxy"
                if mode == "proxy":
                    fake._proxy(self.request)
                else:
                    fake._refuse(self, mode)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _refuse(self, handler: socketserver.StreamRequestHandler, mode: str) -> None:
        send = handler.wfile.write
        send(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] fake ready\r\n")
        for line in handler.rfile:
            tag, _, rest = line.decode().strip().partition(" ")
            command = rest.split(" ")[0].upper()
            if command == "CAPABILITY":
                send(f"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n{tag} OK done\r\n".encode())
            elif command == "LOGIN" and mode == "drop":
                return
            elif command == "LOGIN" and mode == "limit":
                send(f"{tag} NO [LIMIT] Too many connections from your address\r\n".encode())
            elif command == "LOGIN":
                send(f"{tag} NO [UNAVAILABLE] Temporary authentication failure.\r\n".encode())
            elif command == "LOGOUT":
                send(f"* BYE bye\r\n{tag} OK done\r\n".encode())
                return
            else:
                send(f"{tag} BAD not here\r\n".encode())

    def _proxy(self, client: socket.socket) -> None:
        server = socket.create_connection(self.upstream)

        def pipe(source: socket.socket, target: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while data := source.recv(65536):
                    target.sendall(data)
            with contextlib.suppress(OSError):
                target.shutdown(socket.SHUT_WR)

        other = threading.Thread(target=pipe, args=(server, client), daemon=True)
        other.start()
        pipe(client, server)
        other.join(timeout=30)
        server.close()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def refusing(dovecot):
    fakes = []

    def make(modes):
        fake = RefusingImap((dovecot[0], dovecot[1]), modes)
        fakes.append(fake)
        return fake

    yield make
    for fake in fakes:
        fake.close()


def test_a_temporary_login_refusal_keeps_the_account_active_and_is_retried(user, seeded, refusing):
    fake = refusing(["proxy", "unavailable", "drop", "limit"])
    account = account_for(user, seeded, port=fake.port)  # its connection test passes
    with pytest.raises(ImapLoginDeferred):
        ImapAccountSync(account).sync()
    account.refresh_from_db()
    assert account.status == "active"
    assert "temporarily refused" in account.last_error and "[UNAVAILABLE]" in account.last_error

    # The task retries with backoff (eagerly here): a login cut off, then [LIMIT], then in.
    outcome = incremental_sync.apply(args=[account.pk]).get()
    assert outcome["done"] and fake.modes == []
    account.refresh_from_db()
    assert (account.status, account.last_error) == ("active", "")
    assert_store_matches_server(account, seeded)


def set_password(users_dir: str, username: str, password: str) -> None:
    """Change the user's password in Dovecot's passwd-file (which it re-reads when the file's
    mtime changes, stat()ing it at most once a second)."""
    path = Path(users_dir, username)
    path.write_text(f"{username}:{{PLAIN}}{password}\n")
    later = time.time() + 2
    os.utime(path, (later, later))
    time.sleep(1.1)


def test_a_fixed_password_brings_a_parked_account_back(imap_account, seeded, dovecot):
    set_password(dovecot[2], seeded.username, "changed-on-the-server")
    with pytest.raises(ImapAuthError):
        ImapAccountSync(Account.objects.get(pk=imap_account.pk)).sync()
    account = Account.objects.get(pk=imap_account.pk)
    assert (account.status, account.auth_failures) == ("auth_error", 1)
    first = (account.auth_retest_at - timezone.now()).total_seconds()
    assert 50 < first <= 60, "re-tested in a minute"
    assert watchdog.watchdog_tick()["auth_retests"] == [], "not due yet"

    def when_due():
        Account.objects.filter(pk=account.pk).update(auth_retest_at=timezone.now())
        return watchdog.watchdog_tick()["auth_retests"]

    # Still refused: parked again, and the next re-test backs off (2 minutes).
    assert when_due() == [account.pk]
    [outcome] = run_queued_tasks()
    assert list(outcome) == ["refused"]
    account.refresh_from_db()
    assert (account.status, account.auth_failures) == ("auth_error", 2)
    assert 110 < (account.auth_retest_at - timezone.now()).total_seconds() <= 120

    # The password works again on the server: the re-test reactivates and syncs the account.
    set_password(dovecot[2], seeded.username, seeded.password)
    assert when_due() == [account.pk]
    outcomes = run_queued_tasks()
    assert outcomes[0] == {"reactivated": True} and outcomes[1]["done"]
    account.refresh_from_db()
    assert (account.status, account.last_error, account.auth_failures) == ("active", "", 0)
    assert account.auth_retest_at is None
    assert_store_matches_server(account, seeded)


@pytest.mark.parametrize(
    ("failures", "seconds"), [(1, 60), (2, 120), (3, 240), (10, 30720), (11, 61440), (12, 86400)]
)
def test_auth_retests_back_off_to_one_a_day(failures, seconds):
    from messages.account_status import auth_retest_delay

    assert auth_retest_delay(failures).total_seconds() == seconds
