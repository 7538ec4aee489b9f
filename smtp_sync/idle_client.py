"""A small asyncio IMAP client that only holds IDLE (RFC 2177), with NOTIFY (RFC 5465).

Why not aioimaplib: it connects by host name itself (the outbound guard must resolve once and
connect to the checked address), has no NOTIFY, and keeps a command queue, a per-connection
buffer and futures per client that the listener does not need. What is needed here is a
handful of commands (CAPABILITY, STARTTLS, LOGIN / AUTHENTICATE XOAUTH2, EXAMINE, NOTIFY,
IDLE, DONE, LOGOUT) over asyncio streams, with a line limit so a held mailbox costs a bounded
amount of memory whatever the server sends.

Knows the protocol and nothing of Django or the store.
"""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import ssl
from collections.abc import Awaitable, Callable

from emailplatform import netguard

from .imap import (
    ImapAuthError,
    ImapConnectError,
    ImapError,
    ImapLoginDeferred,
    ImapRefusedError,
    ImapServer,
    _printable,
    _tls_context,
    login_refusal_is_temporary,
)

MAX_LINE_BYTES = 64 * 1024  # the stream's buffer limit: what one held mailbox may buffer
KEEP_LITERAL_BYTES = 1024  # of a literal in an untagged response, the rest is skipped
TLS_READ_BUFFER_BYTES = 17 * 1024  # see bound_tls_buffers
CONNECT_TIMEOUT = 30.0
COMMAND_TIMEOUT = 60.0
# Untagged responses that say a mailbox changed (STATUS and LIST come from NOTIFY).
CHANGE_WORDS = frozenset({b"EXISTS", b"EXPUNGE", b"FETCH", b"VANISHED", b"STATUS", b"LIST"})
NOTIFY_SET = (
    "NOTIFY SET (selected (MessageNew MessageExpunge FlagChange))"
    " (personal (MessageNew MessageExpunge FlagChange MailboxName))"
)

_LITERAL = re.compile(rb"\{(\d+)\+?\}$")
_CODE = re.compile(rb"\[([A-Za-z-]+)")


class ImapBye(ImapConnectError):
    """The server said BYE (shutting down, too many connections, an idle timeout)."""

    def __init__(self, text: str) -> None:
        super().__init__(f"the server closed the session: {text}")
        self.text = text

    @property
    def code(self) -> str | None:
        match = _CODE.search(self.text.encode())
        return match.group(1).decode().upper() if match else None


def is_change(line: bytes) -> bool:
    """Whether an untagged response LINE reports a change of a watched mailbox."""
    parts = line.split(b" ", 3)
    if len(parts) < 2 or parts[0] != b"*":
        return False
    word = parts[2] if parts[1].isdigit() and len(parts) > 2 else parts[1]
    return word.upper() in CHANGE_WORDS


class IdleSession:
    """One logged-in connection. `open()` connects and logs in, `watch()` selects INBOX and
    sets NOTIFY when the server has it, `idle()` holds IDLE and calls ON_CHANGE for every
    change it hears, renewing IDLE every RENEW_SECONDS."""

    def __init__(self, server: ImapServer) -> None:
        self.server = server
        self.capabilities: frozenset[str] = frozenset()
        self.notify = False  # NOTIFY set: every folder of the personal namespace is watched
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tag = 0

    # Connection --------------------------------------------------------------------------
    async def open(self) -> None:
        server = self.server
        try:
            addresses = await asyncio.get_running_loop().run_in_executor(
                None,
                lambda: netguard.resolve(
                    server.host,
                    server.port,
                    policy=netguard.policy_for(server.allow_internal),
                    plaintext=server.security == "none",
                ),
            )
        except netguard.HostInvalid as exc:
            raise ImapRefusedError(f"{server.host!r}: {exc}", kind="invalid") from exc
        except netguard.AddressRefused as exc:
            raise ImapRefusedError(str(exc), kind=exc.kind) from exc
        except netguard.HostNotFound as exc:
            raise ImapConnectError(f"host {server.host!r} not found ({exc.strerror})") from exc
        name = addresses[0].host
        implicit_tls = server.security == "ssl"
        error: Exception | None = None
        for checked in addresses[: netguard.MAX_ATTEMPTS]:
            try:
                self._reader, self._writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        str(checked.address),
                        checked.port,
                        ssl=_tls_context() if implicit_tls else None,
                        server_hostname=name if implicit_tls else None,
                        limit=MAX_LINE_BYTES,
                    ),
                    CONNECT_TIMEOUT,
                )
                break
            except (OSError, TimeoutError) as exc:
                error = exc
        else:
            where = f"{server.host}:{server.port}"
            raise ImapConnectError(f"cannot connect to {where}: {error}") from error
        _keepalive(self._writer)
        greeting = await self._line(CONNECT_TIMEOUT)
        if greeting.startswith(b"* BYE"):
            raise ImapBye(_printable(greeting[6:].decode("utf-8", "replace"), 200))
        if not greeting.startswith((b"* OK", b"* PREAUTH")):
            raise ImapConnectError(f"{server.host}:{server.port} is not an IMAP server")
        if server.security == "starttls":
            await self._command("STARTTLS")
            await self._writer.start_tls(_tls_context(), server_hostname=name)
        await self._login()
        self.capabilities = await self._capability()

    async def _login(self) -> None:
        server = self.server
        if server.oauth2_token:
            token = f"user={server.username}\x01auth=Bearer {server.oauth2_token}\x01\x01"
            command = f"AUTHENTICATE XOAUTH2 {base64.b64encode(token.encode()).decode()}"
        else:
            command = f"LOGIN {_quote(server.username)} {_quote(server.password)}"
        status, text, _ = await self._command(command, check=False, hide=True)
        if status == b"OK":
            return
        reason = _printable(text.decode("utf-8", "replace"))
        if login_refusal_is_temporary(reason):
            raise ImapLoginDeferred(f"login temporarily refused by {server.host}: {reason}")
        raise ImapAuthError(f"login refused by {server.host}: {reason}")

    async def _capability(self) -> frozenset[str]:
        _, _, untagged = await self._command("CAPABILITY")
        words: set[str] = set()
        for line in untagged:
            if line.upper().startswith(b"* CAPABILITY "):
                words.update(w.decode().upper() for w in line.split()[2:])
        return frozenset(words)

    async def watch(self, folder: str = "INBOX", *, notify: bool = True) -> dict[str, int]:
        """EXAMINE FOLDER (read-only) and, when the server has NOTIFY and NOTIFY is wanted, ask
        for changes of every personal folder too. Returns the folder's counters
        (UIDVALIDITY, UIDNEXT, EXISTS, HIGHESTMODSEQ where given)."""
        _, _, untagged = await self._command(f"EXAMINE {_quote(folder)}")
        counters: dict[str, int] = {}
        for line in untagged:
            words = line.split()
            if len(words) >= 3 and words[2].upper() == b"EXISTS":
                counters["EXISTS"] = int(words[1])
            for key in (b"UIDVALIDITY", b"UIDNEXT", b"HIGHESTMODSEQ"):
                found = re.search(rb"\[" + key + rb" (\d+)\]", line, re.IGNORECASE)
                if found:
                    counters[key.decode()] = int(found.group(1))
        self.notify = False
        if notify and "NOTIFY" in self.capabilities:
            status, _, _ = await self._command(NOTIFY_SET, check=False)
            self.notify = status == b"OK"
        return counters

    async def idle(
        self,
        on_change: Callable[[], Awaitable[None] | None],
        *,
        renew_seconds: float,
        stopping: asyncio.Event | None = None,
    ) -> None:
        """Hold IDLE until STOPPING is set (or the connection breaks: an ImapError)."""
        loop = asyncio.get_running_loop()
        while stopping is None or not stopping.is_set():
            tag = self._send("IDLE")
            while True:
                line = await self._line(COMMAND_TIMEOUT)
                if line.startswith(b"+"):
                    break
                if line.startswith(tag + b" "):
                    raise ImapError(f"IDLE refused: {_printable(line.decode('utf-8', 'replace'))}")
                await self._untagged(line, on_change)
            renew_at = loop.time() + renew_seconds
            while (left := renew_at - loop.time()) > 0 and not (stopping and stopping.is_set()):
                try:
                    line = await self._line(left)
                except TimeoutError:
                    break
                await self._untagged(line, on_change)
            self._writer.write(b"DONE\r\n")
            while not (line := await self._line(COMMAND_TIMEOUT)).startswith(tag + b" "):
                await self._untagged(line, on_change)

    async def _untagged(self, line: bytes, on_change: Callable) -> None:
        if line.startswith(b"* BYE"):
            raise ImapBye(_printable(line[6:].decode("utf-8", "replace"), 200))
        if is_change(line):
            result = on_change()
            if result is not None:
                await result

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        try:
            if not writer.is_closing():
                writer.write(f"x{self._tag + 1} LOGOUT\r\n".encode())
            writer.close()
            await asyncio.wait_for(writer.wait_closed(), 2.0)
        except (OSError, TimeoutError, ssl.SSLError):
            pass

    # Protocol ----------------------------------------------------------------------------
    def _send(self, command: str) -> bytes:
        self._tag += 1
        tag = f"x{self._tag}".encode()
        self._writer.write(tag + b" " + command.encode() + b"\r\n")
        return tag

    async def _command(
        self, command: str, *, check: bool = True, hide: bool = False
    ) -> tuple[bytes, bytes, list[bytes]]:
        """Send COMMAND, read to its tagged answer: (status, text, untagged lines)."""
        tag = self._send(command)
        untagged: list[bytes] = []
        while True:
            line = await self._line(COMMAND_TIMEOUT)
            if line.startswith(tag + b" "):
                status, _, text = line[len(tag) + 1 :].partition(b" ")
                status = status.upper()
                if check and status != b"OK":
                    shown = command.split()[0] if hide else command
                    raise ImapError(
                        f"{shown} failed: {_printable(text.decode('utf-8', 'replace'))}"
                    )
                return status, text, untagged
            if line.startswith(b"* BYE"):
                raise ImapBye(_printable(line[6:].decode("utf-8", "replace"), 200))
            if len(untagged) < 64:
                untagged.append(line)

    async def _line(self, timeout: float) -> bytes:
        """One response line without CRLF, its literals cut to KEEP_LITERAL_BYTES."""
        reader = self._reader
        parts: list[bytes] = []
        while True:
            try:
                raw = await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout)
            except asyncio.LimitOverrunError as exc:
                raise ImapConnectError("the server sent a line over the limit") from exc
            except asyncio.IncompleteReadError as exc:
                raise ImapConnectError("the server closed the connection") from exc
            except (ConnectionError, ssl.SSLError) as exc:
                raise ImapConnectError(f"the connection broke: {exc}") from exc
            line = raw[:-2]
            literal = _LITERAL.search(line)
            if literal is None:
                parts.append(line)
                return b"".join(parts)
            parts.append(line)
            size = int(literal.group(1))
            kept = await reader.readexactly(min(size, KEEP_LITERAL_BYTES))
            left = size - len(kept)
            while left > 0:
                left -= len(await reader.read(min(left, MAX_LINE_BYTES)))
            parts.append(kept)


def bound_tls_buffers(size: int = TLS_READ_BUFFER_BYTES) -> None:
    """asyncio's TLS transport (3.11+) gives every connection a 256 KiB read buffer, zeroed,
    so resident: 2.5 GB for 10,000 held mailboxes. A TLS record is at most 16 KiB of plaintext,
    and reads loop until the buffer is drained, so SIZE bounds memory, not what can be read.
    For a process that holds many idle TLS connections (the listener); it sets a class
    attribute of asyncio's SSLProtocol for the whole process."""
    sslproto = getattr(asyncio, "sslproto", None)
    if sslproto is not None and getattr(sslproto.SSLProtocol, "max_size", 0) > size:
        sslproto.SSLProtocol.max_size = size


def _quote(text: str) -> str:
    if text and all(32 < ord(c) < 127 and c not in '(){ %*"\\]' for c in text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    if any(c in escaped for c in "\r\n"):
        raise ImapError("a user name, password or folder name with a line break")
    return f'"{escaped}"'


def _keepalive(writer: asyncio.StreamWriter) -> None:
    """A peer that vanished without a word (a cut network) is noticed in minutes, not hours."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", 120), ("TCP_KEEPINTVL", 30), ("TCP_KEEPCNT", 4)):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
