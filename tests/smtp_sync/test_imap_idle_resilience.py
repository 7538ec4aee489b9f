"""The IDLE listener outlives the database: a refresh that cannot reach PostgreSQL is retried,
the watchers keep their IDLE sessions meanwhile, and nothing holds a connection while it waits."""

import threading
import time

import pytest
from django.db import connection, connections

from messages.services import account_delete_request
from smtp_sync.idle import REFRESH_SECONDS, IdleSupervisor
from smtp_sync.sync import ImapAccountSync
from tests.imap_fixtures import account_for
from tests.mailfactory import make_mail
from tests.worker import free_port, other_backends, terminate_other_backends, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def listener(tmp_path):
    """Start a supervisor loop in a thread: (supervisor, triggers, heartbeat file)."""
    started = []

    def start(refresh_seconds):
        triggers: list[float] = []
        supervisor = IdleSupervisor(lambda _id: triggers.append(time.monotonic()))
        heartbeat = tmp_path / "idle.heartbeat"
        stopping = threading.Event()
        thread = threading.Thread(
            target=supervisor.run,
            args=(stopping,),
            kwargs={"refresh_seconds": refresh_seconds, "heartbeat": heartbeat},
        )
        thread.start()
        started.append((supervisor, stopping, thread))
        return supervisor, triggers, heartbeat, thread

    yield start
    for supervisor, stopping, thread in started:
        stopping.set()
        thread.join(timeout=10)
        supervisor.stop()


def test_listener_survives_the_database_going_away_and_coming_back(
    imap_account, imap_user, listener
):
    ImapAccountSync(imap_account).sync()  # records IDLE among the capabilities
    supervisor, triggers, heartbeat, thread = listener(0.2)
    wait_for(lambda: triggers, what="the watcher's catch-up trigger")
    watcher = supervisor.watchers[imap_account.pk]
    time.sleep(0.5)  # IDLE is held now

    db = connections["default"].settings_dict
    port = db["PORT"]
    db["PORT"] = str(free_port())  # new connections are refused from now on...
    try:
        terminate_other_backends()  # ...and the server closes whatever was open
        time.sleep(0.3)
        beat = heartbeat.stat().st_mtime_ns
        time.sleep(1.5)
        assert heartbeat.stat().st_mtime_ns == beat, "refreshes fail while the database is away"
        assert thread.is_alive()
        assert watcher.is_alive() and supervisor.watchers[imap_account.pk] is watcher

        # The IDLE session still reports changes while the database is away.
        seen = len(triggers)
        imap_user.append("INBOX", make_mail("pushed", message_id="<pushed@x>"))
        wait_for(lambda: len(triggers) > seen, timeout=15, what="a trigger from IDLE")
    finally:
        db["PORT"] = port

    wait_for(lambda: heartbeat.stat().st_mtime_ns > beat, timeout=15, what="a good refresh again")
    assert thread.is_alive()
    assert supervisor.watchers[imap_account.pk] is watcher, "the IDLE session was kept"


def test_listener_holds_no_database_connection_while_it_waits(imap_account, listener):
    ImapAccountSync(imap_account).sync()
    connection.close()
    supervisor, triggers, heartbeat, _thread = listener(60)
    wait_for(lambda: triggers and heartbeat.exists(), what="a refresh and the catch-up trigger")
    time.sleep(0.5)  # the watcher is in IDLE, the supervisor waits for its next refresh
    assert supervisor.watchers[imap_account.pk].is_alive()
    assert other_backends() == set()


def test_a_new_account_is_watched_within_seconds_and_a_deleted_one_let_go(
    user, imap_user, listener
):
    """With the production refresh interval (a minute), the account list is read again at
    once when an account is added or removed: a Redis nudge (smtp_sync.idle_nudge)."""
    supervisor, _triggers, heartbeat, _thread = listener(REFRESH_SECONDS)
    wait_for(heartbeat.exists, what="the listener's first refresh")
    time.sleep(1.5)  # past its first nudge-free second

    started = time.monotonic()
    account = account_for(user, imap_user)
    wait_for(lambda: account.pk in supervisor.watchers, timeout=10, what="a watcher")
    assert time.monotonic() - started < 5

    watcher = supervisor.watchers[account.pk]
    started = time.monotonic()
    account_delete_request(account=account)
    wait_for(lambda: account.pk not in supervisor.watchers, timeout=10, what="no watcher")
    assert time.monotonic() - started < 5
    watcher.join(timeout=40)
    assert not watcher.is_alive()
