"""The asyncio IDLE listener (smtp_sync.idle_listener): one process, many mailboxes, against the
real Dovecot; the damping of refusals against a tiny IMAP server of the test's own."""

import asyncio
import socket
import threading
import time

import pytest
from django.db import connection

from messages.models import Message
from smtp_sync.idle_listener import AsyncIdleListener
from smtp_sync.imap import ImapServer
from smtp_sync.services import imap_sync_account
from smtp_sync.sync import ImapAccountSync
from tests.mailfactory import make_mail
from tests.worker import other_backends, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


class Running:
    """An AsyncIdleListener running its loop in a thread of its own, as in its own process."""

    def __init__(self, listener: AsyncIdleListener, *, refresh_seconds: float = 60.0) -> None:
        self.listener = listener
        self.loop = asyncio.new_event_loop()
        self.stopping: asyncio.Event | None = None
        ready = threading.Event()

        async def main() -> None:
            self.stopping = asyncio.Event()
            ready.set()
            await listener.run(self.stopping, refresh_seconds=refresh_seconds)

        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(main(),))
        self.thread.start()
        ready.wait(5)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.stopping.set)
        self.thread.join(timeout=60)  # letting go of every session; slow on a loaded machine
        assert not self.thread.is_alive(), "the listener did not stop within 60 s"
        self.loop.close()


@pytest.fixture
def run_listener():
    started: list[Running] = []

    def start(trigger, **kwargs) -> Running:
        refresh = kwargs.pop("refresh_seconds", 60.0)
        running = Running(AsyncIdleListener(trigger, **kwargs), refresh_seconds=refresh)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


def test_new_mail_reaches_the_store_through_the_asyncio_listener(
    imap_account, imap_user, run_listener
):
    ImapAccountSync(imap_account).sync()  # records IDLE among the capabilities
    triggers: list[int] = []

    def trigger(account_id):
        triggers.append(account_id)
        imap_sync_account(account_id)

    running = run_listener(trigger)
    wait_for(lambda: running.listener.stats.held == 1 and triggers, what="IDLE held")
    time.sleep(0.3)
    seen = len(triggers)
    imap_user.append("INBOX", make_mail("pushed", message_id="<pushed@x>"))
    wait_for(
        lambda: Message.objects.filter(account=imap_account, subject="pushed").exists(),
        timeout=15,
        what="the pushed message",
    )
    assert len(triggers) > seen and set(triggers) == {imap_account.pk}


def test_notify_watches_folders_beyond_inbox(imap_account, imap_user, run_listener):
    """Dovecot has NOTIFY: mail filed straight into another folder is heard on the one
    connection; without NOTIFY only INBOX is."""
    ImapAccountSync(imap_account).sync()
    with_notify: list[float] = []
    inbox_only: list[float] = []
    a = run_listener(lambda _id: with_notify.append(time.monotonic()))
    b = run_listener(lambda _id: inbox_only.append(time.monotonic()), notify=False)
    wait_for(
        lambda: a.listener.stats.held == 1 and b.listener.stats.held == 1,
        what="both listeners holding",
    )
    assert a.listener.stats.notify == 1 and b.listener.stats.notify == 0
    wait_for(lambda: with_notify and inbox_only, what="the catch-up triggers")
    time.sleep(0.5)
    seen_a, seen_b = len(with_notify), len(inbox_only)
    imap_user.append("Archive", make_mail("filed", message_id="<filed@x>"))
    wait_for(lambda: len(with_notify) > seen_a, timeout=10, what="a trigger from NOTIFY")
    time.sleep(1.5)
    assert len(inbox_only) == seen_b, "INBOX-only IDLE does not hear other folders"


def test_listener_holds_no_database_connection_while_it_idles(imap_account, run_listener):
    ImapAccountSync(imap_account).sync()
    connection.close()
    running = run_listener(lambda _id: None)
    wait_for(lambda: running.listener.stats.held == 1, what="IDLE held")
    time.sleep(0.5)
    assert other_backends() == set()


class RefusingServer:
    """An IMAP server that greets, then refuses every LOGIN for now ([UNAVAILABLE]); counts
    the connections it got."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.closing = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.closing:
            try:
                peer, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._talk, args=(peer,), daemon=True).start()

    def _talk(self, peer: socket.socket) -> None:
        with peer, peer.makefile("rwb") as stream:
            stream.write(b"* OK [CAPABILITY IMAP4rev1 IDLE] ready\r\n")
            stream.flush()
            line = stream.readline()
            tag = line.split(b" ", 1)[0]
            stream.write(tag + b" NO [UNAVAILABLE] Too busy, try again later\r\n")
            stream.flush()

    def close(self) -> None:
        self.closing = True
        self.sock.close()


def test_a_server_that_defers_logins_is_not_stormed(run_listener):
    """40 mailboxes on one server that answers [UNAVAILABLE]: after the first refusals every
    connect to it pauses, so it sees a handful of connections, not one per mailbox per retry."""
    server = RefusingServer()
    try:
        servers = {
            n: ImapServer(
                host="127.0.0.1",
                port=server.port,
                security="none",
                username=f"user{n}",
                password="pw",
                allow_internal=True,
            )
            for n in range(1, 41)
        }
        running = run_listener(
            lambda _id: None,
            connect_rate=50,
            connect_burst=5,
            reconnect_jitter=0.2,
            accounts=lambda: servers,
        )
        wait_for(lambda: running.listener.stats.refusals >= 1, what="a refusal")
        time.sleep(0.8)
        # Without the pause: 40 mailboxes at 50 connects/s would make 40 or more in this time.
        assert server.connections <= 10
        assert running.listener.stats.held == 0
    finally:
        server.close()


def test_connects_to_one_server_keep_to_its_rate(imap_user, run_listener):
    """30 sessions of one Dovecot user at 20 connects/s (burst 5): about 1.25 s to hold all,
    never all at once."""
    server = ImapServer(
        host=imap_user.host,
        port=imap_user.port,
        security="none",
        username=imap_user.username,
        password=imap_user.password,
        allow_internal=True,
    )
    started = time.monotonic()
    running = run_listener(
        lambda _id: None,
        connect_rate=20,
        connect_burst=5,
        accounts=lambda: dict.fromkeys(range(1, 31), server),
    )
    wait_for(lambda: running.listener.stats.held == 30, timeout=20, what="30 held")
    assert time.monotonic() - started >= 1.1
