"""Fixtures for a real Dovecot (`make test` starts it via scripts/devservices.py)."""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from imapclient import IMAPClient

from messages.models import Account, MessageLocation
from smtp_sync.accounts import ImapAccountInput, imap_account_create

SYSTEM = {"\\Seen", "\\Flagged", "\\Answered", "\\Draft"}


@dataclass
class MailServerUser:
    host: str
    port: int
    username: str
    password: str

    def client(self) -> IMAPClient:
        client = IMAPClient(self.host, port=self.port, ssl=False, timeout=30)
        client.login(self.username, self.password)
        return client

    def append(self, folder: str, *raws: bytes, flags: tuple[str, ...] = ()) -> None:
        with self.client() as c:
            for raw in raws:
                c.append(folder, raw, flags=[f.encode() for f in flags])

    @property
    def home(self) -> Path:
        return Path(os.environ["DOVECOT_HOME"], self.username)

    def uidvalidity_reset(self, folder: str = "INBOX") -> None:
        maildir_uidvalidity_reset(self.home, folder)

    def mailbox_state(self) -> dict[str, dict[int, tuple[str, frozenset[str]]]]:
        """{folder: {uid: (sha256 of the bytes, system flags)}} as the server has it."""
        state = {}
        with self.client() as c:
            for _flags, _delim, name in c.list_folders():
                c.select_folder(name, readonly=True)
                uids = c.search(["ALL"])
                data = c.fetch(uids, ["BODY.PEEK[]", "FLAGS"]) if uids else {}
                state[name] = {
                    uid: (
                        hashlib.sha256(d[b"BODY[]"]).hexdigest(),
                        frozenset(f.decode() for f in d[b"FLAGS"]) & SYSTEM,
                    )
                    for uid, d in data.items()
                }
        return state


def maildir_uidvalidity_reset(home: Path, folder: str = "INBOX", first_uid: int = 1000) -> None:
    """Give FOLDER of a Dovecot maildir a new UIDVALIDITY and new UIDs (from FIRST_UID), as a
    restored backup or a lost dovecot-uidlist does: the uidlist's header (V: UIDVALIDITY, N:
    next UID) and lines are rewritten, and the indexes that cache them removed. The files, so
    the messages' X-GUIDs (a maildir file's base name), stay. No session may have it open."""
    maildir = home / "Maildir"
    directory = maildir if folder == "INBOX" else maildir / f".{folder.replace('/', '.')}"
    uidlist = directory / "dovecot-uidlist"
    header, *lines = uidlist.read_text().splitlines()
    version, *fields = header.split()
    renumbered = [f"{first_uid + i} {line.partition(' ')[2]}" for i, line in enumerate(lines)]
    new_fields = []
    for item in fields:
        if item.startswith("V"):
            item = f"V{int(item[1:]) + 1}"
        elif item.startswith("N"):
            item = f"N{first_uid + len(lines)}"
        new_fields.append(item)
    owner = uidlist.stat()
    replacement = directory / "dovecot-uidlist.reset"
    replacement.write_text("\n".join([" ".join([version, *new_fields]), *renumbered, ""]))
    os.chown(replacement, owner.st_uid, owner.st_gid)
    replacement.replace(uidlist)
    for index in [*directory.glob("dovecot.index*"), *maildir.glob("dovecot.list.index*")]:
        index.unlink()


def store_state(account: Account) -> dict[str, dict[int, tuple[str, frozenset[str]]]]:
    state: dict[str, dict] = {name: {} for name in account.folders.values_list("name", flat=True)}
    locations = MessageLocation.objects.filter(message__account=account).select_related(
        "message", "message__raw", "folder"
    )
    for loc in locations:
        m = loc.message
        flags = {
            flag
            for flag, on in (
                ("\\Seen", m.is_read),
                ("\\Flagged", m.is_flagged),
                ("\\Answered", m.is_answered),
                ("\\Draft", m.is_draft),
            )
            if on
        }
        state[loc.folder.name][loc.uid] = (m.raw.sha256, frozenset(flags))
    return state


def assert_store_matches_server(account: Account, server: MailServerUser) -> None:
    assert store_state(account) == server.mailbox_state()
    contents = [sha for folder in store_state(account).values() for sha, _ in folder.values()]
    assert account.messages.count() == len(set(contents)), "one row per distinct message"


@pytest.fixture(scope="session")
def dovecot() -> tuple[str, int, str]:
    host = os.environ.get("IMAP_TEST_HOST")
    users_dir = os.environ.get("DOVECOT_USERS_DIR")
    if not host or not users_dir:
        pytest.fail(
            "IMAP_TEST_HOST / DOVECOT_USERS_DIR are not set: run the suite with `make test`, "
            "which starts a private Dovecot"
        )
    return host, int(os.environ["IMAP_TEST_PORT"]), users_dir


@pytest.fixture(autouse=True)
def _imap_pool_emptied():
    """Each test starts with an empty default IMAP pool, and leaves no session open."""
    from smtp_sync.pool import default_pool_reset

    default_pool_reset()
    yield
    default_pool_reset()


def new_mail_server_user(dovecot: tuple[str, int, str]) -> MailServerUser:
    """A new Dovecot user (its own passwd-file: Dovecot, and its LMTP, know it at once)."""
    host, port, users_dir = dovecot
    username = f"u{uuid.uuid4().hex[:12]}"
    password = uuid.uuid4().hex
    Path(users_dir, username).write_text(f"{username}:{{PLAIN}}{password}\n")
    return MailServerUser(host, port, username, password)


@pytest.fixture
def imap_user(dovecot) -> MailServerUser:
    return new_mail_server_user(dovecot)


def account_for(owner, server: MailServerUser, *, port: int | None = None) -> Account:
    """An IMAP account of SERVER's user (through another PORT, e.g. a proxy, if given)."""
    return imap_account_create(
        owner=owner,
        data=ImapAccountInput(
            email_address=f"{server.username}@example.com",
            imap_host=server.host,
            imap_port=port or server.port,
            imap_security="none",
            username=server.username,
            password=server.password,
        ),
        start_sync=False,
    )


@pytest.fixture
def imap_account(user, imap_user) -> Account:
    return account_for(user, imap_user)


# Tiny TCP servers for the outbound guard's tests (tests/smtp_sync/test_ssrf.py) ----------------
class TinyServer:
    """A TCP server on a loopback address, in a thread: records every peer that connected, sends
    GREETING (none: a silent server that keeps the connection open) and, with `imap`, answers
    CAPABILITY and LOGOUT like a minimal IMAP server and refuses LOGIN. TLS with SSL_CONTEXT
    (the SNI names the client sent are recorded). Use as a context manager."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        greeting: bytes = b"",
        imap: bool = False,
        ssl_context=None,
        port: int = 0,
    ) -> None:
        import socket
        import threading

        self.greeting = greeting
        self.imap = imap
        self.ssl_context = ssl_context
        self.peers: list[str] = []
        self.sni: list[str | None] = []
        self._conns: list = []
        self._stop = threading.Event()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.host = host
        self.port = self.sock.getsockname()[1]
        if ssl_context is not None:
            ssl_context.sni_callback = lambda conn, name, ctx: self.sni.append(name)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def __enter__(self) -> TinyServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connections(self) -> int:
        return len(self.peers)

    def close(self) -> None:
        import contextlib

        self._stop.set()
        self._thread.join(5)
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.close()
        self.sock.close()

    def _serve(self) -> None:
        import threading

        while not self._stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.peers.append(peer[0])
            self._conns.append(conn)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn) -> None:
        try:
            if self.ssl_context is not None:
                conn.settimeout(5)
                conn = self.ssl_context.wrap_socket(conn, server_side=True)
                self._conns.append(conn)
            if self.greeting:
                conn.sendall(self.greeting)
            if not self.imap:
                return  # stays open (silent, or the banner only) until the test ends
            reader = conn.makefile("rb")
            for line in reader:
                tag, _, command = line.decode().strip().partition(" ")
                verb = command.split(" ", 1)[0].upper()
                if verb == "CAPABILITY":
                    conn.sendall(f"* CAPABILITY IMAP4rev1\r\n{tag} OK done\r\n".encode())
                elif verb == "LOGOUT":
                    conn.sendall(f"* BYE bye\r\n{tag} OK done\r\n".encode())
                    return
                else:
                    conn.sendall(f"{tag} NO [AUTHENTICATIONFAILED] no\r\n".encode())
        except OSError:
            return
