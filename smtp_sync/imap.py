"""The IMAP adapter: knows the protocol (imapclient), nothing of Django or the store."""

from __future__ import annotations

import contextlib
import functools
import imaplib
import ipaddress
import logging
import re
import socket
import ssl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

from imapclient import IMAPClient, imap4, tls
from imapclient.exceptions import IMAPClientError, LoginError
from imapclient.response_parser import parse_fetch_response

from emailplatform import netguard

FETCH_PIECE_BYTES = 4 * 1024 * 1024

SPECIAL_USE_ROLES = {
    b"\\inbox": "inbox",
    b"\\sent": "sent",
    b"\\drafts": "drafts",
    b"\\trash": "trash",
    b"\\junk": "spam",
    b"\\archive": "archive",
    b"\\all": "all",
    b"\\flagged": "flagged",
    b"\\important": "important",
}


class ImapError(Exception):
    """A failure talking to the server; the message is readable by the account's owner."""


class ImapAuthError(ImapError):
    """The server refused the credentials: retrying will not help."""


class ImapConnectError(ImapError):
    """The server could not be reached, or the connection broke: worth retrying later."""


class ImapLoginDeferred(ImapConnectError):
    """The server refused the login for now (RFC 5530 [UNAVAILABLE], [LIMIT], [INUSE],
    [SERVERBUG], a rate limit, or the connection dropped during login): retried with backoff
    like a connection failure; the account stays active."""


# RFC 5530 response codes of a refused login. A temporary one says nothing of the password.
TEMPORARY_LOGIN_CODES = frozenset({"UNAVAILABLE", "LIMIT", "INUSE", "SERVERBUG"})
PERMANENT_LOGIN_CODES = frozenset(
    {"AUTHENTICATIONFAILED", "AUTHORIZATIONFAILED", "EXPIRED", "PRIVACYREQUIRED", "CONTACTADMIN"}
)
# Words of servers that refuse for now without a code (Gmail's "Too many simultaneous
# connections", "Account exceeded command or bandwidth limits", "try again later").
TEMPORARY_LOGIN_WORDS = (
    "too many",
    "try again",
    "temporar",
    "rate limit",
    "throttl",
    "bandwidth limit",
    "unavailable",
)


def login_refusal_is_temporary(text: str) -> bool:
    """Tell a login refused for now from a refused password, by the server's answer.

    An RFC 5530 code decides; without one, a refusal is permanent unless its words say it is
    a rate limit or a passing failure."""
    codes = {code.upper() for code in re.findall(r"\[([A-Za-z-]+)", text)}
    if codes & PERMANENT_LOGIN_CODES:
        return False
    if codes & TEMPORARY_LOGIN_CODES:
        return True
    lowered = text.lower()
    return any(word in lowered for word in TEMPORARY_LOGIN_WORDS)


class ImapRefusedError(ImapError):
    """The guard refused the destination before connecting (emailplatform.netguard): an
    internal address, plain IMAP to a host not on the allow list, or an invalid host name.
    `kind` is the guard's ("internal", "plaintext", "unusable") or "invalid"."""

    def __init__(self, message: str, *, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class ImapServer:
    host: str
    port: int
    security: str  # "ssl", "starttls" or "none"
    username: str
    password: str = ""
    oauth2_token: str = ""
    timeout: float = 60.0
    # Internal addresses allowed (the account was created by staff); see netguard.
    allow_internal: bool = False


@dataclass
class ServerFolder:
    name: str
    delimiter: str
    flags: tuple[bytes, ...]
    role: str | None  # from SPECIAL-USE; None when the server says nothing

    @property
    def selectable(self) -> bool:
        return b"\\noselect" not in {f.lower() for f in self.flags} and (
            b"\\nonexistent" not in {f.lower() for f in self.flags}
        )


@dataclass
class FolderStatus:
    uidvalidity: int
    uidnext: int
    exists: int
    highest_modseq: int | None
    # SELECT's PERMANENTFLAGS (b"\\*": new keywords may be stored); empty from STATUS and
    # from a read-only SELECT (EXAMINE: nothing may be changed).
    permanent_flags: tuple[bytes, ...] = ()

    def keeps_keyword(self, keyword: str) -> bool:
        """Whether a message's KEYWORD is stored for good in this (selected) folder."""
        flags = {f.lower() for f in self.permanent_flags}
        return b"\\*" in flags or keyword.lower().encode() in flags


@dataclass
class FetchedMessage:
    uid: int
    flags: list[str]
    internal_date: datetime | None
    raw: bytes | None
    size: int
    raw_file: str | None = None  # fetch_message_to_file: the raw is in this file instead
    modseq: int | None = None
    gm_msgid: str | None = None
    gm_thrid: str | None = None
    gm_labels: list[str] = field(default_factory=list)
    # The server's id of the message (see `ImapConnection.server_id_kind`), when it gives one.
    server_id: str | None = None
    # fetch_identities: the Message-ID header field as the server sent it (b"" without one).
    message_id_field: bytes | None = None


@dataclass
class FlagChanges:
    flags: dict[int, list[str]]
    vanished: list[int]


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _flags(values: Iterable[bytes | str]) -> list[str]:
    return sorted(_text(v) for v in values if _text(v).lower() != "\\recent")


def _server_id(kind: str | None, data: dict) -> str | None:
    """The server's id as the store keeps it: "<kind>:<id>"."""
    key = {"oid": b"EMAILID", "gm": b"X-GM-MSGID", "guid": b"X-GUID"}.get(kind or "")
    value = data.get(key) if key else None
    if isinstance(value, tuple | list):  # EMAILID (M6d99ac3275bb4e)
        value = value[0] if value else None
    if value is None or value in (b"", b"NIL"):
        return None
    text = _text(value) if isinstance(value, bytes | str) else str(value)
    return f"{kind}:{text}"[:255]


def _header_fields(data: dict) -> bytes:
    """The BODY[HEADER.FIELDS (...)] item of a FETCH response (servers vary its case)."""
    for key, value in data.items():
        if isinstance(key, bytes) and key.upper().startswith(b"BODY[HEADER.FIELDS"):
            return value or b""
    return b""


def _folder_status(response: dict, *, count_key: bytes) -> FolderStatus:
    """SELECT and STATUS answer with the same counters (the count is EXISTS or MESSAGES)."""
    modseq = response.get(b"HIGHESTMODSEQ")
    return FolderStatus(
        uidvalidity=int(response[b"UIDVALIDITY"]),
        uidnext=int(response.get(b"UIDNEXT", 0)),
        exists=int(response.get(count_key, 0)),
        highest_modseq=int(modseq) if modseq is not None else None,
        permanent_flags=tuple(response.get(b"PERMANENTFLAGS", ())),
    )


def _quiet_imaplib(client: IMAPClient) -> None:
    """imapclient sets imaplib's debug level to 5, and imaplib then formats every response,
    message bodies included (a repr of each), for a logger that drops it unless DEBUG is on:
    a tenth of a full sync's time. Kept only when that logger would print it."""
    if not logging.getLogger("imapclient.imaplib").isEnabledFor(logging.DEBUG):
        client._imap.debug = 0


@functools.lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    """Built once: creating a default context costs ~20 ms, a third of a quiet sync."""
    return ssl.create_default_context()


def _reason(exc: Exception) -> str:
    """The server's words from an imaplib error (whose argument is often bytes), printable
    and at most 300 characters."""
    arg = exc.args[0] if exc.args else exc
    text = _text(arg) if isinstance(arg, bytes | str) else str(arg)
    if text.startswith(("b'", 'b"')) and text.endswith(("'", '"')):
        text = text[2:-1]
    return _printable(text)


def _printable(text: str, limit: int = 300) -> str:
    text = "".join(c if c.isprintable() else " " for c in text).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _NoImapGreeting(Exception):
    """The peer did not greet like an IMAP server; what it sent is never repeated (it may be
    another service's banner). `bye`: the text of a `* BYE` greeting (an IMAP server's)."""

    def __init__(self, *, timed_out: bool = False, bye: str = "") -> None:
        super().__init__("no IMAP greeting")
        self.timed_out = timed_out
        self.bye = bye


class _GuardedIMAP4Mixin:
    """imaplib.IMAP4 over a socket from the guard (the host resolved once, its address
    checked); the greeting must be an IMAP greeting."""

    _guard_open: Callable[[float | None], socket.socket]
    _timeout: float | None

    def _connect(self) -> None:
        try:
            super()._connect()  # type: ignore[misc]
        except TimeoutError:
            raise _NoImapGreeting(timed_out=True) from None
        except imaplib.IMAP4.error:
            welcome = _text(getattr(self, "welcome", b"") or b"")
            bye = welcome[len("* BYE ") :] if welcome.upper().startswith("* BYE ") else ""
            raise _NoImapGreeting(bye=_printable(bye, 200)) from None


class _GuardedIMAP4(_GuardedIMAP4Mixin, imap4.IMAP4WithTimeout):
    def __init__(self, host: str, port: int, timeout: float | None, guard_open) -> None:
        self._guard_open = guard_open
        super().__init__(host, port, timeout)

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        return self._guard_open(timeout if timeout is not None else self._timeout)


class _GuardedIMAP4TLS(_GuardedIMAP4Mixin, tls.IMAP4_TLS):
    def __init__(self, host, port, ssl_context, timeout, guard_open) -> None:
        self._guard_open = guard_open
        super().__init__(host, port, ssl_context, timeout)

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        sock = self._guard_open(timeout if timeout is not None else self._timeout)
        try:  # the certificate is checked for the name, whatever address was connected
            return tls.wrap_socket(sock, self.ssl_context, self.host)
        except BaseException:
            sock.close()
            raise


class GuardedIMAPClient(IMAPClient):
    """IMAPClient whose connection goes through emailplatform.netguard: HOST (normalized) is
    resolved once, every address checked against POLICY, the socket connected to the checked
    address, while TLS (implicit or STARTTLS) verifies the certificate for HOST. PLAINTEXT:
    no TLS at all, allowed for allow-listed hosts only."""

    def __init__(
        self, host: str, *, policy: netguard.Policy, plaintext: bool, **kwargs: object
    ) -> None:
        self._guard = (policy, plaintext)
        super().__init__(host, **kwargs)  # type: ignore[arg-type]

    def _create_IMAP4(self):  # noqa: N802 (imapclient's name)
        policy, plaintext = self._guard
        timeout = getattr(self._timeout, "connect", None)

        def guard_open(connect_timeout: float | None) -> socket.socket:
            return netguard.connect(
                self.host, self.port, timeout=connect_timeout, policy=policy, plaintext=plaintext
            )

        if self.ssl:
            return _GuardedIMAP4TLS(self.host, self.port, self.ssl_context, timeout, guard_open)
        return _GuardedIMAP4(self.host, self.port, timeout, guard_open)


def parse_uid_set(text: bytes | str) -> list[int]:
    """'1:3,7' -> [1, 2, 3, 7]."""
    uids: list[int] = []
    for part in _text(text).split(","):
        part = part.strip()
        if not part:
            continue
        if ":" in part:
            low, high = sorted(int(x) for x in part.split(":"))
            uids.extend(range(low, high + 1))
        else:
            uids.append(int(part))
    return uids


class ImapConnection:
    """One logged-in IMAP session. Use as a context manager."""

    # Extensions not to use even when advertised (servers with broken CONDSTORE exist).
    ignored_capabilities: frozenset[str] = frozenset()
    # Dovecot answers FETCH X-GUID without advertising it: asked once per session when the
    # server has no OBJECTID, and not again after a refusal. False: never asked.
    try_x_guid: bool = True

    def __init__(self, server: ImapServer) -> None:
        self.server = server
        self.client: IMAPClient | None = None
        self.capabilities: set[str] = set()
        # Set once a command failed (a NO, a BAD, a broken connection): the session's state
        # is no longer known, so it is not to be reused (smtp_sync.pool).
        self.failed = False
        self.bodies_downloaded = 0  # messages whose bytes this session fetched
        self._x_guid: bool | None = None  # None: not asked yet

    def __enter__(self) -> ImapConnection:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Connection --------------------------------------------------------------------------
    def connect(self) -> None:
        server = self.server
        context = _tls_context() if server.security in ("ssl", "starttls") else None
        try:
            client = GuardedIMAPClient(
                netguard.normalize_host(server.host),
                policy=netguard.policy_for(server.allow_internal),
                plaintext=server.security == "none",
                port=server.port,
                ssl=server.security == "ssl",
                ssl_context=context if server.security == "ssl" else None,
                timeout=server.timeout,
            )
            _quiet_imaplib(client)
            if server.security == "starttls":
                client.starttls(context)
        except netguard.HostInvalid as exc:
            raise ImapRefusedError(f"{server.host!r}: {exc}", kind="invalid") from exc
        except netguard.AddressRefused as exc:
            raise ImapRefusedError(str(exc), kind=exc.kind) from exc
        except netguard.HostNotFound as exc:
            raise ImapConnectError(f"host {server.host!r} not found ({exc.strerror})") from exc
        except _NoImapGreeting as exc:
            where = f"{server.host}:{server.port}"
            if exc.bye:
                raise ImapConnectError(f"{where} refused the session: {exc.bye}") from None
            if exc.timed_out:
                raise ImapConnectError(
                    f"no IMAP greeting from {where} within {server.timeout:g} s: "
                    "not an IMAP server?"
                ) from None
            raise ImapConnectError(f"{where} is not an IMAP server") from None
        except ConnectionRefusedError as exc:
            raise ImapConnectError(
                f"connection to {server.host}:{server.port} refused (is it the IMAP port?)"
            ) from exc
        except ssl.SSLError as exc:
            raise ImapConnectError(f"TLS failure with {server.host}: {exc.reason or exc}") from exc
        except TimeoutError as exc:
            raise ImapConnectError(f"connection to {server.host}:{server.port} timed out") from exc
        except (OSError, IMAPClientError) as exc:
            raise ImapConnectError(f"cannot connect to {server.host}:{server.port}: {exc}") from exc
        try:
            if server.oauth2_token:
                client.oauth2_login(server.username, server.oauth2_token)
            else:
                client.login(server.username, server.password)
        except LoginError as exc:
            with contextlib.suppress(Exception):
                client.shutdown()
            reason = _reason(exc)
            if isinstance(exc.__context__, imaplib.IMAP4.abort):  # dropped (or BYE) mid-login
                raise ImapLoginDeferred(f"login to {server.host} cut off: {reason}") from exc
            if login_refusal_is_temporary(reason):
                raise ImapLoginDeferred(
                    f"login temporarily refused by {server.host}: {reason}"
                ) from exc
            raise ImapAuthError(f"login refused by {server.host}: {reason}") from exc
        except (OSError, IMAPClientError) as exc:
            raise ImapConnectError(f"login to {server.host} failed: {exc}") from exc
        self.client = client
        advertised = {_text(c).upper() for c in client.capabilities()}
        self.capabilities = advertised - self.ignored_capabilities
        wanted = [c for c in ("CONDSTORE", "QRESYNC") if c in self.capabilities]
        if wanted and "ENABLE" in self.capabilities:
            client.enable(*wanted)

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.logout()
            except Exception:  # the connection may already be gone
                with contextlib.suppress(Exception):
                    self.client.shutdown()
            self.client = None

    def ping(self, timeout: float) -> None:
        """NOOP, answered within TIMEOUT seconds, or ImapConnectError: the health check of a
        session that sat unused (the server may have logged it out, or the network dropped it).
        Whatever the server announced meanwhile is dropped: the next SELECT or STATUS reads
        the state afresh."""
        sock = self.imap.socket()
        previous = sock.gettimeout()
        sock.settimeout(timeout)
        try:
            self._call(self.imap.noop)
        finally:
            with contextlib.suppress(OSError):
                sock.settimeout(previous)
        self.imap._imap.untagged_responses = {}

    def guard_allows_peer(self) -> bool:
        """Whether the outbound guard, asked again now, lets this session's server through:
        the host resolved afresh under today's policy, and the connected address among its
        checked addresses. A session kept for reuse is re-checked like a new connection, so a
        name moved to an internal address (DNS rebinding) or an address taken off the allow
        list is refused at the next use, not when the session ends."""
        server = self.server
        try:
            checked = netguard.resolve(
                server.host,
                server.port,
                policy=netguard.policy_for(server.allow_internal),
                plaintext=server.security == "none",
            )
            peer = self.imap.socket().getpeername()[0]
        except (netguard.GuardError, OSError, ImapError):
            return False
        address = netguard.effective_address(ipaddress.ip_address(peer.split("%", 1)[0]))
        return any(c.address == address for c in checked)

    def unselect(self) -> None:
        """Leave the selected folder, if any, without expunging (RFC 3691 UNSELECT; never
        CLOSE, which would expunge messages marked \\Deleted). A server without UNSELECT keeps
        the folder selected: every use of a session starts with SELECT or STATUS anyway."""
        if (
            self.client is not None
            and self.client._imap.state == "SELECTED"
            and self.has("UNSELECT")
        ):
            self._call(self.imap.unselect_folder)

    @property
    def imap(self) -> IMAPClient:
        if self.client is None:
            raise ImapConnectError("not connected")
        return self.client

    def has(self, capability: str) -> bool:
        return capability.upper() in self.capabilities

    # Folders -----------------------------------------------------------------------------
    def list_folders(self) -> list[ServerFolder]:
        folders = []
        for flags, delimiter, name in self._call(self.imap.list_folders):
            lowered = {f.lower() for f in flags}
            role = next((r for f, r in SPECIAL_USE_ROLES.items() if f in lowered), None)
            if name.upper() == "INBOX":
                role = "inbox"
            folders.append(
                ServerFolder(
                    name=name,
                    delimiter=_text(delimiter or b""),
                    flags=tuple(flags),
                    role=role,
                )
            )
        return folders

    def select(self, folder: str, readonly: bool = True) -> FolderStatus:
        response = self._call(self.imap.select_folder, folder, readonly=readonly)
        return _folder_status(response, count_key=b"EXISTS")

    def status(self, folder: str) -> FolderStatus:
        """The folder's counters without selecting it (cheaper on big folders)."""
        items = [b"UIDVALIDITY", b"UIDNEXT", b"MESSAGES"]
        if self.has("CONDSTORE"):
            items.append(b"HIGHESTMODSEQ")
        response = self._call(self.imap.folder_status, folder, items)
        return _folder_status(response, count_key=b"MESSAGES")

    def message_count(self, folder: str) -> int:
        status = self._call(self.imap.folder_status, folder, [b"MESSAGES"])
        return int(status.get(b"MESSAGES", 0))

    # Messages ----------------------------------------------------------------------------
    def search_uids(self, since: date | None = None, min_uid: int | None = None) -> list[int]:
        criteria: list = []
        if min_uid:
            criteria += ["UID", f"{min_uid}:*"]
        if since:
            criteria += ["SINCE", since]
        uids = self._call(self.imap.search, criteria or ["ALL"])
        # "UID n:*" matches the highest UID even when it is below n.
        return sorted(uid for uid in uids if not min_uid or uid >= min_uid)

    @property
    def server_id_kind(self) -> str | None:
        """Where the server's message ids come from: "oid" (RFC 8474 EMAILID), "gm"
        (X-GM-MSGID), "guid" (Dovecot's X-GUID), or None when it gives none."""
        if self.has("OBJECTID"):
            return "oid"
        if self.has("X-GM-EXT-1"):
            return "gm"
        if self.try_x_guid and self._x_guid is not False:
            return "guid"
        return None

    def fetch_identities(
        self, uids: Sequence[int], *, message_id_field: bool = True
    ) -> list[FetchedMessage]:
        """What tells a message without its body: server id, size, date, flags and, with
        MESSAGE_ID_FIELD, the Message-ID header field (the server reads the message for it)."""
        return self.fetch_messages(uids, include_body=False, message_id_field=message_id_field)

    def fetch_messages(
        self, uids: Sequence[int], include_body: bool = True, *, message_id_field: bool = False
    ) -> list[FetchedMessage]:
        if not uids:
            return []
        items = ["UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE"]
        if include_body:
            items.append("BODY.PEEK[]")
        if message_id_field:
            items.append("BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]")
        gmail = self.has("X-GM-EXT-1")
        if gmail:
            items += ["X-GM-MSGID", "X-GM-THRID", "X-GM-LABELS"]
        if self.has("CONDSTORE"):
            items.append("MODSEQ")
        kind = self.server_id_kind
        if kind == "oid":
            items.append("EMAILID")
        elif kind == "guid":
            items.append("X-GUID")
        try:
            response = self._call(self.imap.fetch, list(uids), items)
        except ImapConnectError:
            raise
        except ImapError:
            if kind != "guid" or self._x_guid is not None:
                raise
            self._x_guid = False  # not Dovecot: it refused the item
            return self.fetch_messages(uids, include_body, message_id_field=message_id_field)
        if kind == "guid":
            self._x_guid = True
        fetched = []
        for uid in uids:
            data = response.get(uid)
            if data is None:  # expunged meanwhile
                continue
            modseq = data.get(b"MODSEQ")
            fetched.append(
                FetchedMessage(
                    uid=uid,
                    flags=_flags(data.get(b"FLAGS", ())),
                    internal_date=data.get(b"INTERNALDATE"),
                    raw=data.get(b"BODY[]") if include_body else None,
                    size=int(data.get(b"RFC822.SIZE", 0)),
                    modseq=int(modseq[0]) if modseq else None,
                    gm_msgid=str(data[b"X-GM-MSGID"]) if gmail and b"X-GM-MSGID" in data else None,
                    gm_thrid=str(data[b"X-GM-THRID"]) if gmail and b"X-GM-THRID" in data else None,
                    gm_labels=[_text(x) for x in data.get(b"X-GM-LABELS", ())],
                    server_id=_server_id(kind, data),
                    message_id_field=_header_fields(data) if message_id_field else None,
                )
            )
        if include_body:
            self.bodies_downloaded += sum(1 for m in fetched if m.raw is not None)
        return fetched

    def fetch_message_to_file(self, uid: int, path: Path) -> FetchedMessage | None:
        """A big message, fetched in pieces (BODY.PEEK[]<offset.length>) into PATH, so that
        it is never whole in memory. None when it was expunged meanwhile."""
        fetched = self.fetch_messages([uid], include_body=False)
        if not fetched:
            return None
        piece_bytes = FETCH_PIECE_BYTES
        offset = 0
        with path.open("wb") as handle:
            while True:
                response = self._call(
                    self.imap.fetch, [uid], [f"BODY.PEEK[]<{offset}.{piece_bytes}>"]
                )
                data = response.get(uid)
                if data is None:
                    return None
                piece = data.get(f"BODY[]<{offset}>".encode()) or b""
                handle.write(piece)
                offset += len(piece)
                if len(piece) < piece_bytes:
                    break
        fetched[0].raw_file = str(path)
        self.bodies_downloaded += 1
        return fetched[0]

    def fetch_flags(self, uids: Sequence[int]) -> dict[int, list[str]]:
        if not uids:
            return {}
        response = self._call(self.imap.fetch, list(uids), ["UID", "FLAGS"])
        return {uid: _flags(data.get(b"FLAGS", ())) for uid, data in response.items()}

    def changes_since(self, modseq: int) -> FlagChanges:
        """Flags changed since MODSEQ (CONDSTORE) and, with QRESYNC, the UIDs expunged since."""
        modifiers = [f"CHANGEDSINCE {modseq}"]
        qresync = self.has("QRESYNC")
        if qresync:
            modifiers.append("VANISHED")
        self.imap._imap.untagged_responses.pop("VANISHED", None)
        response = self._fetch_all(["UID", "FLAGS"], modifiers)
        vanished: list[int] = []
        if qresync:
            for line in self.imap._imap.untagged_responses.pop("VANISHED", []):
                vanished.extend(parse_uid_set(_text(line).replace("(EARLIER)", "")))
        return FlagChanges(
            flags={uid: _flags(data.get(b"FLAGS", ())) for uid, data in response.items()},
            vanished=sorted(set(vanished)),
        )

    def _fetch_all(self, items: list[str], modifiers: list[str]) -> dict:
        """UID FETCH 1:* -- imapclient's fetch() cannot take a range (it int()s the ids)."""
        imap = self.imap

        def run() -> dict:
            args = ["UID", "FETCH", b"1:*", b"(" + " ".join(items).encode() + b")"]
            if modifiers:
                args.append(b"(" + " ".join(modifiers).encode() + b")")
            tag = imap._imap._command(*args)
            typ, data = imap._imap._command_complete("FETCH", tag)
            imap._checkok("fetch", typ, data)
            typ, data = imap._imap._untagged_response(typ, data, "FETCH")
            return parse_fetch_response(data, imap.normalise_times, True)

        return self._call(run)

    # Changes from the client -------------------------------------------------------------
    def set_flags(self, uids: Sequence[int], flags: Sequence[str], add: bool) -> None:
        method = self.imap.add_flags if add else self.imap.remove_flags
        self._call(method, list(uids), [f.encode() for f in flags], silent=True)

    def replace_flags(self, uids: Sequence[int], flags: Sequence[str]) -> None:
        """STORE FLAGS: UIDS keep exactly FLAGS (one command for what adding one keyword and
        removing another would take two)."""
        self._call(self.imap.set_flags, list(uids), [f.encode() for f in flags], silent=True)

    def move(self, uids: Sequence[int], destination: str) -> None:
        if self.has("MOVE"):
            self._call(self.imap.move, list(uids), destination)
            return
        self._call(self.imap.copy, list(uids), destination)
        self._call(self.imap.add_flags, list(uids), [b"\\Deleted"], silent=True)
        if self.has("UIDPLUS"):
            self._call(self.imap.uid_expunge, list(uids))
        else:
            self._call(self.imap.expunge)

    # Outbound: the copy in Sent --------------------------------------------------------------
    def append(self, folder: str, raw: bytes, flags: Sequence[str] = ()) -> tuple[int, int] | None:
        """APPEND RAW to FOLDER with FLAGS; (UIDVALIDITY, UID) of the copy when the server says
        (UIDPLUS APPENDUID), else None."""
        answer = self._call(self.imap.append, folder, raw, flags=[f.encode() for f in flags])
        found = re.search(rb"\[APPENDUID (\d+) (\d+)\]", answer or b"")
        return (int(found.group(1)), int(found.group(2))) if found else None

    def append_many(
        self, folder: str, raws: Sequence[bytes], flags: Sequence[str] = ()
    ) -> tuple[int, list[int]] | None:
        """APPEND RAWS to FOLDER with FLAGS in one MULTIAPPEND (RFC 3502: all or none, one
        write on the server); (UIDVALIDITY, the copies' UIDs in order) when the server says
        (UIDPLUS), else None. Only for a server that has MULTIAPPEND."""
        flagged = [{"msg": raw, "flags": [f.encode() for f in flags]} for raw in raws]
        typ, data = self._call(self.imap.multiappend, folder, flagged)
        answer = b" ".join(d for d in data or [] if isinstance(d, bytes))
        if typ != "OK":
            raise ImapError(f"the server refused the APPEND to {folder}: {_text(answer)}")
        found = re.search(rb"\[APPENDUID (\d+) ([\d:,]+)\]", answer or b"")
        if found is None:
            return None
        uids = [
            uid
            for part in found.group(2).split(b",")
            for uid in _uid_range(*(int(n) for n in part.split(b":")))
        ]
        return (int(found.group(1)), uids) if len(uids) == len(raws) else None

    def search_message_id(self, folder: str, message_id: str) -> list[int]:
        """UIDs of FOLDER's messages whose Message-ID header is MESSAGE_ID (SEARCH HEADER, a
        substring match on the server: the exact field is checked here); FOLDER stays
        selected, read-write."""
        return self.search_message_ids(folder, [message_id]).get(message_id, [])

    def search_message_ids(
        self, folder: str, message_ids: Sequence[str], *, since: date | None = None
    ) -> dict[str, list[int]]:
        """`search_message_id` for several Message-IDs in one SEARCH (ORed): the UIDs of each
        one found; only among messages the server got SINCE that day, when given (the server
        narrows by its index first instead of reading every message's header)."""
        self.select(folder, readonly=False)
        criteria: list[object] = ["SINCE", since] if since is not None and message_ids else []
        for index, message_id in enumerate(message_ids):
            if index < len(message_ids) - 1:
                criteria.append("OR")
            criteria += ["HEADER", "Message-ID", message_id]
        uids = self._call(self.imap.search, criteria) if criteria else []
        if not uids:
            return {}
        fields = self.fetch_messages(sorted(uids), include_body=False, message_id_field=True)
        wanted = {message_id.strip().lower(): message_id for message_id in message_ids}
        found: dict[str, list[int]] = {}
        for m in fields:
            field = _text(m.message_id_field or b"").partition(":")[2].strip().lower()
            if field in wanted:
                found.setdefault(wanted[field], []).append(m.uid)
        return found

    def delete(self, uids: Sequence[int]) -> None:
        """Expunge UIDS of the selected folder (only them, with UIDPLUS)."""
        if not uids:
            return
        self._call(self.imap.add_flags, list(uids), [b"\\Deleted"], silent=True)
        if self.has("UIDPLUS"):
            self._call(self.imap.uid_expunge, list(uids))
        else:
            self._call(self.imap.expunge)

    # Errors ------------------------------------------------------------------------------
    def _call(self, method, *args, **kwargs):
        try:
            return method(*args, **kwargs)
        except (OSError, imaplib.IMAP4.abort) as exc:
            self.failed = True
            raise ImapConnectError(f"connection to {self.server.host} lost: {exc}") from exc
        except IMAPClientError as exc:
            self.failed = True
            raise ImapError(f"{self.server.host} answered: {_reason(exc)}") from exc


def _uid_range(first: int, last: int | None = None) -> range:
    """The UIDs of a UID set's part "first" or "first:last" (either order)."""
    last = first if last is None else last
    return range(min(first, last), max(first, last) + 1)
