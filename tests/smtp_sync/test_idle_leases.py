"""Several asyncio IDLE listeners share one account list through their membership in Redis
(smtp_sync.idle_leases), against the real Redis and Dovecot: each listener runs its own event
loop in a thread, as it would in its own process on its own host."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from emailplatform import syncstate
from smtp_sync.idle_leases import Membership
from smtp_sync.idle_listener import AsyncIdleListener
from smtp_sync.imap import ImapServer
from tests.imap_fixtures import account_for, new_mail_server_user
from tests.worker import ROOT, process_env, wait_for

HEARTBEAT = 0.5
TTL = 2.0
ACCOUNTS = range(1, 31)


class Listener:
    """A listener in a thread of its own; `crash` stops its loop dead (no deregistration, no
    clean-up), as a killed process would."""

    def __init__(self, servers: dict[int, ImapServer], group: str) -> None:
        self.membership = Membership(group, heartbeat_seconds=HEARTBEAT, ttl_seconds=TTL)
        self.listener = AsyncIdleListener(
            lambda _id: None,
            accounts=lambda: servers,
            membership=self.membership,
            reconnect_jitter=0.2,
        )
        self.loop = asyncio.new_event_loop()
        self.stopping: asyncio.Event | None = None
        ready = threading.Event()

        async def main() -> None:
            self.stopping = asyncio.Event()
            ready.set()
            await self.listener.run(self.stopping, refresh_seconds=60.0)

        def run() -> None:
            with contextlib.suppress(RuntimeError):  # crashed: the loop was stopped under it
                self.loop.run_until_complete(main())

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(5)
        self.done = False

    def held(self) -> set[int]:
        """The accounts whose IDLE this listener holds now."""
        return {a for a, m in self.listener.mailboxes.copy().items() if m.state == "held"}

    def assigned(self) -> set[int]:
        return set(self.listener.mailboxes.copy())  # a copy: it changes in the loop's thread

    def stop(self) -> None:
        if not self.done:
            self.done = True
            self.loop.call_soon_threadsafe(self.stopping.set)
            self.thread.join(timeout=15)

    def crash(self) -> None:
        self.done = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


@pytest.fixture
def start(imap_user):
    """Start a listener of this test's group over 30 mailboxes (30 sessions of one Dovecot
    user, one account id each)."""
    server = ImapServer(
        host=imap_user.host,
        port=imap_user.port,
        security="none",
        username=imap_user.username,
        password=imap_user.password,
        allow_internal=True,
    )
    servers = dict.fromkeys(ACCOUNTS, server)
    group = f"test-{uuid.uuid4().hex}"
    started: list[Listener] = []

    def start_one() -> Listener:
        listener = Listener(servers, group)
        started.append(listener)
        return listener

    yield start_one
    for listener in started:
        listener.stop()


def shared_exactly(*listeners: Listener) -> bool:
    """Each of LISTENERS sees them all, every account is held by exactly one of them, and each
    holds only its own."""
    held = [listener.held() for listener in listeners]
    assigned = [listener.assigned() for listener in listeners]
    return (
        all(listener.listener.stats.members == len(listeners) for listener in listeners)
        and held == assigned
        and sum(len(h) for h in held) == len(ACCOUNTS)
        and set().union(*held) == set(ACCOUNTS)
    )


def live_members(listener: Listener) -> list[str]:
    return [m.decode() for m in syncstate.client().zrange(listener.membership.key, 0, -1)]


def test_two_listeners_share_the_accounts_without_overlap(start):
    a = start()
    wait_for(lambda: len(a.held()) == len(ACCOUNTS), what="the first listener holding all")
    b = start()
    wait_for(lambda: shared_exactly(a, b), timeout=20, what="the accounts shared by a and b")
    assert a.held() and b.held(), "each listener takes a share"
    time.sleep(3 * HEARTBEAT)
    assert shared_exactly(a, b), "the sharing is stable over heartbeats"
    assert a.listener.stats.members == b.listener.stats.members == 2


def test_a_crashed_listeners_mailboxes_are_held_again_within_ttl_and_a_heartbeat(start):
    a = start()
    b = start()
    wait_for(lambda: shared_exactly(a, b), timeout=20, what="the accounts shared by a and b")
    orphaned = b.held()
    assert orphaned
    b.crash()
    crashed = time.monotonic()
    assert b.membership.member in live_members(a), "a crash does not deregister"
    wait_for(lambda: len(a.held()) == len(ACCOUNTS), timeout=20, what="a holding all")
    elapsed = time.monotonic() - crashed
    assert a.assigned() == set(ACCOUNTS)
    assert live_members(a) == [a.membership.member]
    print(f"b's {len(orphaned)} mailboxes held again by a {elapsed:.2f} s after b's crash")
    # b's entry lapses TTL after its last heartbeat (up to a heartbeat before the crash), a's
    # next heartbeat sees it, then a's logins (a few seconds spare on a loaded machine).
    assert TTL - HEARTBEAT <= elapsed <= TTL + HEARTBEAT + 4.0, elapsed


def test_a_joining_listener_takes_a_share_and_the_others_let_go_of_it(start):
    a = start()
    b = start()
    wait_for(lambda: shared_exactly(a, b), timeout=20, what="the accounts shared by a and b")
    before_a, before_b = a.held(), b.held()
    c = start()
    wait_for(lambda: shared_exactly(a, b, c), timeout=20, what="the accounts shared by three")
    assert c.held(), "the newcomer takes a share"
    # Rendezvous hashing: only the newcomer's share moves; a and b keep the rest of theirs.
    assert a.held() <= before_a and b.held() <= before_b
    assert a.held() | b.held() | c.held() == set(ACCOUNTS)
    c.stop()
    assert c.membership.member not in live_members(a), "a graceful stop leaves at once"
    wait_for(lambda: shared_exactly(a, b), timeout=20, what="c's share back with a and b")
    assert (a.held(), b.held()) == (before_a, before_b)


def read_stats(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_killed_listener_process_mailboxes_are_held_again_within_a_minute(
    user, dovecot, tmp_path
):
    """Two `manage.py imap_idle` processes with the production heartbeat (10 s) and lapse
    (30 s): SIGKILL the one holding more, the other holds every mailbox within a minute."""
    accounts = [account_for(user, new_mail_server_user(dovecot)) for _ in range(12)]
    for account in accounts:
        account.imap_settings.capabilities = ["IMAP4REV1", "IDLE"]
        account.imap_settings.save(update_fields=["capabilities"])
    stats = [tmp_path / "a.json", tmp_path / "b.json"]
    procs = [
        subprocess.Popen(
            [sys.executable, "manage.py", "imap_idle", "--stats-file", str(path)],
            cwd=ROOT,
            env=process_env(),
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / f"{path.stem}.log", "ab"),  # noqa: SIM115
        )
        for path in stats
    ]
    try:
        wait_for(
            lambda: (
                [read_stats(p).get("members") for p in stats] == [2, 2]
                and sum(read_stats(p).get("held", 0) for p in stats) == len(accounts)
            ),
            timeout=60,
            what="the two processes sharing the accounts",
        )
        held = [read_stats(p)["held"] for p in stats]
        victim = held.index(max(held))
        survivor = stats[1 - victim]
        assert held[1 - victim] < len(accounts)
        procs[victim].kill()
        procs[victim].wait()
        killed = time.monotonic()
        wait_for(
            lambda: read_stats(survivor).get("held") == len(accounts),
            timeout=60,
            what="the survivor holding every mailbox",
        )
        elapsed = time.monotonic() - killed
        print(f"{max(held)} mailboxes of the killed listener held again after {elapsed:.1f} s")
        assert read_stats(survivor)["members"] == 1
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=20)
