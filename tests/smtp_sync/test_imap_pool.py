"""The IMAP session pool against the real Dovecot: logins saved, and a session is only ever
reused when that is safe (healthy, same credentials, no error, within its caps and times)."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from messages.models import Account, Message
from messages.services import account_delete
from smtp_sync.imap import (
    ImapAuthError,
    ImapConnection,
    ImapError,
    ImapRefusedError,
    ImapServer,
)
from smtp_sync.pool import ImapPool, ImapPoolExhausted, default_pool
from smtp_sync.sync import ImapAccountSync, server_for
from tests.imap_fixtures import MailServerUser, assert_store_matches_server
from tests.mailfactory import make_mail

pytestmark = pytest.mark.django_db(transaction=True)


def dovecot_dir() -> Path:
    return Path(os.environ["DOVECOT_USERS_DIR"]).parent


def server_log(username: str, event: str, *, at_least: int = 0, wait: float = 15.0) -> int:
    """How many lines of Dovecot's log say EVENT ("Login:", "Logged out") for USERNAME;
    waits up to WAIT seconds for AT_LEAST of them (the log process writes a little later)."""
    tag = f"user=<{username}>" if event == "Login:" else f"imap({username})"
    deadline = time.monotonic() + wait
    while True:
        text = (dovecot_dir() / "dovecot.log").read_text(errors="replace")
        count = sum(1 for line in text.splitlines() if tag in line and event in line)
        if count >= at_least or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


def kick(username: str) -> None:
    """Cut every session of USERNAME on the server (doveadm kick), and wait until it is cut
    (the kick is a signal to the session's process)."""
    before = server_log(username, "Disconnected")
    subprocess.run(
        ["doveadm", "-c", str(dovecot_dir() / "dovecot.conf"), "kick", username],
        check=True,
        capture_output=True,
    )
    assert server_log(username, "Disconnected", at_least=before + 1) > before


def server_of(mail_user) -> ImapServer:
    return ImapServer(
        host=mail_user.host,
        port=mail_user.port,
        security="none",
        username=mail_user.username,
        password=mail_user.password,
        allow_internal=True,
    )


def mails(prefix: str, count: int) -> list[bytes]:
    return [
        make_mail(f"{prefix} {i}", message_id=f"<{prefix}-{i}@example.org>") for i in range(count)
    ]


def sync(account: Account, **kwargs):
    return ImapAccountSync(Account.objects.get(pk=account.pk), **kwargs).sync()


@pytest.fixture
def pool():
    made: list[ImapPool] = []

    def make(**kwargs) -> ImapPool:
        made.append(ImapPool(**{"checkout_timeout": 0.5, **kwargs}))
        return made[-1]

    yield make
    for each in made:
        each.clear()


@pytest.fixture
def other_user(dovecot):
    def make() -> MailServerUser:
        host, port, users_dir = dovecot
        username = f"u{uuid.uuid4().hex[:12]}"
        password = uuid.uuid4().hex
        Path(users_dir, username).write_text(f"{username}:{{PLAIN}}{password}\n")
        return MailServerUser(host, port, username, password)

    return make


def test_a_burst_of_syncs_logs_in_once(imap_account, imap_user):
    before = server_log(imap_user.username, "Login:", at_least=1)  # the account's creation test
    with imap_user.client() as appender:  # one login of its own
        appender.append("INBOX", make_mail("first", message_id="<first@example.org>"))
        sync(imap_account)
        for i in range(5):  # what IDLE triggers: new mail, an incremental sync, again
            appender.append("INBOX", make_mail(f"burst {i}", message_id=f"<b{i}@example.org>"))
            assert sync(imap_account).new == 1
    assert server_log(imap_user.username, "Login:", at_least=before + 3, wait=1) == before + 2
    assert (default_pool().stats.logins, default_pool().stats.reused) == (1, 5)
    assert_store_matches_server(imap_account, imap_user)


def test_a_reused_session_sees_expunges_and_keeps_condstore(imap_account, imap_user):
    imap_user.append("INBOX", *mails("m", 4))
    sync(imap_account)
    with imap_user.client() as c:
        c.select_folder("INBOX")
        c.delete_messages(c.search(["ALL"])[:2])
        c.expunge()
        c.add_flags(c.search(["ALL"]), [b"\\Flagged"])
    report = sync(imap_account)
    assert report.removed_locations == 2 and report.flag_changes == 2
    assert_store_matches_server(imap_account, imap_user)
    assert Message.objects.filter(account=imap_account).count() == 2
    assert default_pool().stats.reused == 1
    with default_pool().connection(server_for(imap_account)) as conn:
        assert conn.has("QRESYNC") and conn.select("INBOX").highest_modseq is not None


def test_a_returned_session_leaves_its_folder_without_expunging(pool, imap_user):
    imap_user.append("INBOX", *mails("keep", 2))
    p = pool()
    server = server_of(imap_user)
    with p.connection(server) as conn:
        conn.select("INBOX", readonly=False)
        conn.set_flags([1], ["\\Deleted"], add=True)
        first = conn
    with p.connection(server) as conn:
        assert conn is first and conn.imap._imap.state == "AUTH", "no folder selected"
        assert conn.message_count("INBOX") == 2, "UNSELECT, never CLOSE: nothing expunged"


@pytest.mark.parametrize("how", ["kicked by the server", "socket closed"])
def test_a_session_broken_while_idle_is_replaced_not_handed_out(pool, imap_user, how):
    p = pool()
    server = server_of(imap_user)
    with p.connection(server) as conn:
        conn.select("INBOX")
        broken = conn
    if how == "kicked by the server":
        kick(imap_user.username)
    else:
        broken.imap.socket().shutdown(socket.SHUT_RDWR)
    with p.connection(server) as conn:
        assert conn is not broken
        assert conn.select("INBOX").uidvalidity > 0
    assert broken.client is None, "the broken one was closed"
    assert (p.stats.logins, p.stats.replaced, p.counts()) == (2, 1, (1, 1))


def test_the_caps_hold(pool, other_user):
    a, b, c = other_user(), other_user(), other_user()
    p = pool(max_total=2, max_per_account=1)
    held_a = p.checkout(server_of(a))
    with pytest.raises(ImapPoolExhausted):
        p.checkout(server_of(a))  # one per account: A's only session is in use
    held_b = p.checkout(server_of(b))
    with pytest.raises(ImapPoolExhausted):
        p.checkout(server_of(c))  # two in all, none idle
    assert p.counts() == (2, 0)

    p.checkin(held_b, reusable=True)
    held_c = p.checkout(server_of(c))  # B's idle session makes room
    assert held_b.client is None and p.stats.evicted == 1 and p.counts() == (2, 0)
    assert server_log(b.username, "Logged out", at_least=1) == 1

    # A waiting checkout gets the session as soon as its holder returns it, never before.
    got: list[ImapConnection] = []
    waiting = threading.Thread(target=lambda: got.append(p.checkout(server_of(a))))
    p.checkout_timeout = 5
    waiting.start()
    time.sleep(0.3)
    assert got == []
    p.checkin(held_a, reusable=True)
    waiting.join(5)
    assert got == [held_a] and p.stats.logins == 3
    for conn in (got[0], held_c):
        p.checkin(conn, reusable=True)
    assert p.counts() == (2, 2)


def test_idle_sessions_are_logged_out(pool, imap_user):
    p = pool(idle_seconds=1)
    with p.connection(server_of(imap_user)) as conn:
        conn.select("INBOX")
    assert p.counts() == (1, 1)
    deadline = time.monotonic() + 5
    # The reaper takes the session out of the pool, then logs it out.
    while (p.counts() != (0, 0) or conn.client is not None) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert p.counts() == (0, 0) and conn.client is None, "the reaper logged it out"
    assert server_log(imap_user.username, "Logged out", at_least=1) == 1


def test_an_expired_session_is_never_handed_out(pool, imap_user):
    now = [0.0]
    p = pool(idle_seconds=60, max_age_seconds=600, clock=lambda: now[0])
    server = server_of(imap_user)
    with p.connection(server) as first:
        pass
    now[0] += 61  # idle too long
    with p.connection(server) as second:
        assert second is not first
    for _ in range(10):  # in use every 59 s, but logged in more than 600 s ago at the end
        now[0] += 59
        with p.connection(server) as conn:
            assert conn is second
    now[0] += 59
    with p.connection(server) as third:
        assert third is not second
    assert (p.stats.logins, p.stats.expired) == (3, 2)


def test_an_error_in_use_discards_the_session(pool, imap_user):
    p = pool()
    server = server_of(imap_user)
    with pytest.raises(RuntimeError), p.connection(server) as conn:
        conn.select("INBOX")
        raise RuntimeError("the sync failed half way")
    assert conn.client is None and p.counts() == (0, 0)

    # A protocol error, caught by the user of the session: the pool sees no exception.
    with p.connection(server) as conn, pytest.raises(ImapError):
        conn.select("No such folder")
    assert conn.client is None and p.counts() == (0, 0)
    assert p.stats.logins == 2 and p.stats.reused == 0


def test_changed_credentials_never_reuse_a_session(imap_account, imap_user):
    sync(imap_account)
    old = next(iter(default_pool()._state.idle)).conn

    account = Account.objects.get(pk=imap_account.pk)
    account.set_credentials({"password": "not-the-password"})
    account.save()
    with pytest.raises(ImapAuthError):
        sync(imap_account)  # the logged-in session of the old password is not used
    assert old.client is None, "the old password's session was closed"
    assert default_pool().counts() == (0, 0)

    account.set_credentials({"password": imap_user.password})
    account.save()
    sync(imap_account)
    assert default_pool().stats.logins == 2 and default_pool().stats.reused == 0


def test_a_changed_server_setting_does_not_reuse(pool, imap_user):
    p = pool()
    server = server_of(imap_user)
    with p.connection(server) as first:
        pass
    with p.connection(replace(server, timeout=30.0)) as second:
        assert second is not first
    assert first.client is None and p.counts() == (1, 1)


def test_deleting_the_account_closes_its_sessions(imap_account, imap_user):
    before = server_log(imap_user.username, "Logged out", at_least=1)  # the creation test
    sync(imap_account)
    session = next(iter(default_pool()._state.idle)).conn
    Account.objects.filter(pk=imap_account.pk).update(status=Account.Status.DELETING)
    assert account_delete(account_id=imap_account.pk)
    assert session.client is None and default_pool().counts() == (0, 0)
    assert server_log(imap_user.username, "Logged out", at_least=before + 1) == before + 1


def test_pooling_off_logs_in_every_time(pool, imap_user):
    p = pool(max_total=0)
    server = server_of(imap_user)
    for _ in range(3):
        with p.connection(server) as conn:
            conn.select("INBOX")
        assert conn.client is None
    assert p.stats.logins == 3 and p.counts() == (0, 0)
    assert server_log(imap_user.username, "Login:", at_least=3) == 3


def test_a_pooled_session_passes_the_outbound_guard_again(pool, imap_user, settings):
    p = pool()
    server = server_of(imap_user)
    with p.connection(server) as first:
        pass
    settings.OUTBOUND_ALLOWED_NETWORKS = []  # the server's address taken off the allow list
    with pytest.raises(ImapRefusedError), p.connection(server):
        pass
    assert first.client is None and p.counts() == (0, 0)
