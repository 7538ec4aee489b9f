"""SMTP servers for tests: aiosmtpd in-process on a free loopback port, with fault injection.

Fixtures (registered in tests/conftest.py):

- `smtp_server(behaviour=None, *, tls=False, implicit_tls=False, users=None, exclude_auth=())`:
  a factory that
  starts a server and returns a `FakeSmtpServer`; stopped at the end of the test.
  `server.messages` lists what it received (`ReceivedMessage`: envelope, DSN parameters, data),
  `server.endpoint(**overrides)` is an `SmtpEndpoint` to it (plain, or STARTTLS/SSL with its
  self-signed certificate trusted when `tls`/`implicit_tls`).
- `smtp_tls_files`: a self-signed certificate and key for 127.0.0.1/localhost (generated once
  per session); `smtp_server(tls=True)` uses it.
- `raw_smtp_peer(greeting=b"")`: a TCP peer that sends GREETING (garbage, or nothing: a hang)
  and never answers anything: `.host`, `.port`.

Faults are described by `SmtpBehaviour`: scripted replies per command (a string: always; a
list: one per attempt, then the normal answer), a hang or a cut at a step, missing extensions.
For instance `SmtpBehaviour(data_replies=["451 4.3.0 Try again later"])` refuses the first
message at the end of DATA and accepts the next; `rcpt_replies={"carol@example.net": "550 5.1.1
No such user"}` refuses one recipient; `after_data="cut"` keeps the message (it counts as
delivered) and closes the connection without a reply.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword

from smtp_sync.smtp_transport import SmtpEndpoint

HOST = "127.0.0.1"
HANG_SECONDS = 3600  # a hang lasts until the server stops (its tasks are cancelled)

Scripted = str | list[str]


@dataclass
class SmtpBehaviour:
    mail_replies: Scripted = field(default_factory=list)
    rcpt_replies: dict[str, Scripted] = field(default_factory=dict)  # by recipient address
    data_replies: Scripted = field(default_factory=list)  # at the end of DATA
    hang_at: str | None = None  # "MAIL", "RCPT" or "DATA" (after the data, before the reply)
    after_data: str | None = None  # "cut": keep the message, close without a reply; "hang"
    starttls_reply: str | None = None  # refuse STARTTLS with this reply
    dsn: bool = True
    smtputf8: bool = True
    size_limit: int = 33554432  # SIZE advertised; 0: no SIZE
    hidden_extensions: tuple[str, ...] = ()  # not advertised at EHLO, e.g. ("8BITMIME",)
    echo_secret_on_auth_failure: bool = False  # a careless server repeats the password


@dataclass
class ReceivedMessage:
    mail_from: str
    rcpt_tos: list[str]
    mail_options: list[str]  # MAIL FROM parameters as sent (case kept)
    rcpt_options: list[list[str]]  # RCPT TO parameters per accepted recipient (case kept)
    data: bytes
    smtp_utf8: bool
    login: str | None  # the authenticated user, if any
    tls: bool
    connection: int  # the number of the connection it came on (1, 2, ...)
    confirmed: bool = True  # False: the server cut or hung instead of replying

    def mail_param(self, name: str) -> str | None:
        return _param(self.mail_options, name)

    def rcpt_param(self, address: str, name: str) -> str | None:
        return _param(self.rcpt_options[self.rcpt_tos.index(address)], name)


def _param(options: list[str], name: str) -> str | None:
    for option in options:
        key, _, value = option.partition("=")
        if key.upper() == name.upper():
            return value or ""
    return None


def _next_reply(script: Scripted) -> str | None:
    if isinstance(script, str):
        return script
    return script.pop(0) if script else None


class _DsnEnvelope(Envelope):
    def __init__(self) -> None:
        super().__init__()
        self.mail_params: list[str] = []
        self.rcpt_params: list[list[str]] = []


class _FakeSMTP(SMTP):
    """aiosmtpd's SMTP plus what it lacks: DSN parameters (RFC 3461: kept with their case, as
    aiosmtpd refuses and upper-cases unknown ones) and AUTH XOAUTH2."""

    def __init__(self, handler: FakeSmtpHandler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._fake = handler

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.connection_number = self._fake.connection_opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fake.connection_closed(self)
        super().connection_lost(exc)

    def _create_envelope(self) -> _DsnEnvelope:
        return _DsnEnvelope()

    def _split(self, arg: str | None, names: tuple[str, ...]) -> tuple[str | None, list[str]]:
        if arg is None or not self._fake.behaviour.dsn:
            return arg, []
        words = arg.split(" ")
        kept = [w for w in words if w.partition("=")[0].upper() not in names]
        taken = [w for w in words if w.partition("=")[0].upper() in names]
        return " ".join(kept), taken

    async def smtp_MAIL(self, arg: str | None) -> None:  # noqa: N802 (aiosmtpd's name)
        self._fake.mail_commands += 1
        had_sender = bool(self.envelope is not None and self.envelope.mail_from)
        rest, _dsn = self._split(arg, ("RET", "ENVID"))
        await super().smtp_MAIL(rest)
        envelope = self.envelope
        if not had_sender and isinstance(envelope, _DsnEnvelope) and envelope.mail_from:
            envelope.mail_params = _options(arg)

    async def smtp_RCPT(self, arg: str | None) -> None:  # noqa: N802
        envelope = self.envelope
        before = len(envelope.rcpt_tos) if envelope is not None else 0
        rest, _dsn = self._split(arg, ("NOTIFY", "ORCPT"))
        await super().smtp_RCPT(rest)
        if isinstance(envelope, _DsnEnvelope) and len(envelope.rcpt_tos) > before:
            envelope.rcpt_params.append(_options(arg))

    async def smtp_STARTTLS(self, arg: str) -> None:  # noqa: N802
        if self._fake.behaviour.starttls_reply:
            await self.push(self._fake.behaviour.starttls_reply)
            return
        await super().smtp_STARTTLS(arg)

    async def smtp_QUIT(self, arg: str) -> None:  # noqa: N802
        self._fake.quits += 1
        await super().smtp_QUIT(arg)

    async def auth_XOAUTH2(self, _: Any, args: list[str]) -> AuthResult:  # noqa: N802
        if len(args) == 1:
            blob = await self.challenge_auth("")
            if not isinstance(blob, bytes):
                return AuthResult(success=False, handled=False)
        else:
            blob = base64.b64decode(args[1])
        fields = dict(part.split("=", 1) for part in blob.decode().split("\1") if "=" in part)
        login = fields.get("user", "")
        token = fields.get("auth", "").removeprefix("Bearer ")
        result = self._authenticate("XOAUTH2", LoginPassword(login.encode(), token.encode()))
        if not result.success:
            # RFC 7628: an error challenge first, the client answers with an empty line.
            await self.challenge_auth('{"status":"401","schemes":"bearer"}')
            return AuthResult(success=False, handled=False)
        return result


def _options(arg: str | None) -> list[str]:
    """The parameters after the address of a MAIL/RCPT argument, case kept."""
    text = (arg or "").strip()
    _, _, rest = text.partition(">")
    return rest.split()


class FakeSmtpHandler:
    """aiosmtpd handler hooks driven by a SmtpBehaviour; records what it receives."""

    def __init__(self, behaviour: SmtpBehaviour, users: dict[str, str] | None) -> None:
        self.behaviour = behaviour
        self.users = users or {}
        self.messages: list[ReceivedMessage] = []
        self.auth_attempts: list[tuple[str, str, bool]] = []  # (mechanism, login, success)
        self.connections = 0
        self.mail_commands = 0
        self.quits = 0
        self.open: list[_FakeSMTP] = []
        self._lock = threading.Lock()

    def connection_opened(self, server: _FakeSMTP) -> int:
        with self._lock:
            self.connections += 1
            self.open.append(server)
            return self.connections

    def connection_closed(self, server: _FakeSMTP) -> None:
        with self._lock:
            if server in self.open:
                self.open.remove(server)

    def authenticate(
        self, server: SMTP, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        login = auth_data.login.decode()
        secret = auth_data.password.decode()
        ok = login in self.users and self.users[login] == secret
        self.auth_attempts.append((mechanism, login, ok))
        if ok:
            return AuthResult(success=True, auth_data=auth_data)
        if self.behaviour.echo_secret_on_auth_failure:
            message = f"535 5.7.8 {login}:{secret} is not a valid login"
            return AuthResult(success=False, handled=False, message=message)
        return AuthResult(success=False, handled=False)

    async def handle_EHLO(  # noqa: N802 (aiosmtpd's hook names)
        self, server: SMTP, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.behaviour.dsn:
            responses.insert(-1, "250-DSN")
        hidden = {e.upper() for e in self.behaviour.hidden_extensions}
        return [r for r in responses if r[4:].split(" ")[0].upper() not in hidden]

    async def handle_MAIL(  # noqa: N802
        self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        await self._maybe_hang("MAIL")
        if self.users and not session.authenticated:
            return "530 5.7.0 Authentication required"
        reply = _next_reply(self.behaviour.mail_replies)
        if reply:  # "" in a script: this command is answered as usual
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(  # noqa: N802
        self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        await self._maybe_hang("RCPT")
        script = self.behaviour.rcpt_replies.get(address)
        reply = _next_reply(script) if script is not None else None
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: _FakeSMTP, session: Any, envelope: Any) -> str:  # noqa: N802
        await self._maybe_hang("DATA")
        reply = _next_reply(self.behaviour.data_replies)
        if reply is not None:
            return reply
        after = self.behaviour.after_data
        message = ReceivedMessage(
            mail_from=envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            mail_options=list(getattr(envelope, "mail_params", [])),
            rcpt_options=[list(p) for p in getattr(envelope, "rcpt_params", [])],
            data=bytes(envelope.original_content),
            smtp_utf8=envelope.smtp_utf8,
            login=session.auth_data.login.decode() if session.auth_data else None,
            tls=server.transport.get_extra_info("ssl_object") is not None,
            connection=server.connection_number,
            confirmed=after is None,
        )
        self.messages.append(message)
        if after == "cut":
            server.transport.abort()
            await asyncio.sleep(HANG_SECONDS)
        elif after == "hang":
            await asyncio.sleep(HANG_SECONDS)
        return f"250 2.0.0 Ok: queued as M{len(self.messages)}"

    async def _maybe_hang(self, step: str) -> None:
        if self.behaviour.hang_at == step:
            await asyncio.sleep(HANG_SECONDS)


class _FakeController(Controller):
    def factory(self) -> _FakeSMTP:
        return _FakeSMTP(self.handler, **self.SMTP_kwargs)


def free_port(host: str = HOST) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class TlsFiles:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_self_signed(directory: Path, names: tuple[str, ...] = ("localhost",)) -> TlsFiles:
    """A self-signed certificate for NAMES and 127.0.0.1 (the cryptography package)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt_names.append(x509.IPAddress(ipaddress.ip_address(HOST)))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(cert=directory / "smtp-cert.pem", key=directory / "smtp-key.pem")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


class FakeSmtpServer:
    def __init__(
        self,
        behaviour: SmtpBehaviour,
        *,
        tls: TlsFiles | None = None,
        implicit_tls: bool = False,
        users: dict[str, str] | None = None,
        exclude_auth: tuple[str, ...] = (),
    ) -> None:
        self.behaviour = behaviour
        self.handler = FakeSmtpHandler(behaviour, users)
        self.host = HOST
        self.port = free_port()
        self.security = "ssl" if implicit_tls else ("starttls" if tls else "none")
        kwargs: dict[str, Any] = {
            "enable_SMTPUTF8": behaviour.smtputf8,
            "data_size_limit": behaviour.size_limit or None,
            "auth_require_tls": False,
            "authenticator": self.handler.authenticate,
            "auth_exclude_mechanism": exclude_auth,
            "server_hostname": "smtp.test",
        }
        if tls and not implicit_tls:
            kwargs["tls_context"] = tls.server_context()
        self._controller = _FakeController(
            self.handler,
            hostname=self.host,
            port=self.port,
            ssl_context=tls.server_context() if tls and implicit_tls else None,
            **kwargs,
        )

    def start(self) -> FakeSmtpServer:
        self._controller.start()
        # The controller's own start-up probe is a connection: not one of the test's.
        self.handler.connections = 0
        return self

    def stop(self) -> None:
        self._controller.stop(no_assert=True)

    @property
    def messages(self) -> list[ReceivedMessage]:
        return self.handler.messages

    @property
    def connections(self) -> int:
        return self.handler.connections

    @property
    def auth_attempts(self) -> list[tuple[str, str, bool]]:
        return self.handler.auth_attempts

    def endpoint(self, **overrides: Any) -> SmtpEndpoint:
        """An endpoint to this server; with TLS its self-signed certificate is trusted
        unless `verify_certificate=True` is given."""
        endpoint = SmtpEndpoint(
            host=self.host,
            port=self.port,
            security=self.security,
            verify_certificate=self.security == "none",
            timeout=5.0,
        )
        return replace(endpoint, **overrides)

    def account_settings(self) -> dict[str, Any]:
        """The SMTP fields of an account's ImapSettings pointing at this server, e.g.
        `ImapSettings.objects.filter(account=account).update(**server.account_settings())`."""
        return {
            "smtp_host": self.host,
            "smtp_port": self.port,
            "smtp_security": self.security,
            "smtp_trust_self_signed": self.security != "none",
        }

    def drop_connections(self) -> None:
        """Close every open connection from the server's side (an idle timeout)."""

        def close_all() -> None:
            for server in list(self.handler.open):
                if server.transport is not None:
                    server.transport.close()

        done = threading.Event()
        self._controller.loop.call_soon_threadsafe(lambda: (close_all(), done.set()))
        done.wait(5)


class RawPeer:
    """A TCP peer that sends GREETING once and then says nothing (until stopped)."""

    def __init__(self, greeting: bytes) -> None:
        self.greeting = greeting
        self.host = HOST
        self._listener = socket.create_server((HOST, 0))
        self.port = self._listener.getsockname()[1]
        self._clients: list[socket.socket] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> RawPeer:
        self._listener.settimeout(0.2)
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._clients.append(client)
            if self.greeting:
                client.sendall(self.greeting)

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(5)
        self._listener.close()
        for client in self._clients:
            client.close()


@pytest.fixture(scope="session")
def smtp_tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_self_signed(tmp_path_factory.mktemp("smtp-tls"))


@pytest.fixture
def smtp_server(settings: Any, smtp_tls_files: TlsFiles) -> Iterator[Callable[..., FakeSmtpServer]]:
    """Factory: `smtp_server(behaviour=None, *, tls=False, implicit_tls=False, users=None,
    exclude_auth=())`: USERS (login -> password or OAuth token) makes AUTH required.
    The loopback address is put on the guard's allow list for the test (plain SMTP to it is
    then allowed too)."""
    servers: list[FakeSmtpServer] = []
    allowed = list(settings.OUTBOUND_ALLOWED_NETWORKS)
    if HOST not in allowed:
        settings.OUTBOUND_ALLOWED_NETWORKS = [*allowed, HOST]

    def start(
        behaviour: SmtpBehaviour | None = None,
        *,
        tls: bool = False,
        implicit_tls: bool = False,
        users: dict[str, str] | None = None,
        exclude_auth: tuple[str, ...] = (),
    ) -> FakeSmtpServer:
        files = smtp_tls_files if tls or implicit_tls else None
        server = FakeSmtpServer(
            behaviour or SmtpBehaviour(),
            tls=files,
            implicit_tls=implicit_tls,
            users=users,
            exclude_auth=exclude_auth,
        )
        servers.append(server.start())
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def raw_smtp_peer() -> Iterator[Callable[..., RawPeer]]:
    """Factory: `raw_smtp_peer(greeting=b"")`: garbage, or silence (a hang)."""
    peers: list[RawPeer] = []

    def start(greeting: bytes = b"") -> RawPeer:
        peer = RawPeer(greeting).start()
        peers.append(peer)
        return peer

    yield start
    for peer in peers:
        peer.stop()
