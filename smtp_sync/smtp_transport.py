"""The SMTP adapter (smtplib): knows the protocol, nothing of the store.

One `SmtpSession` sends a burst of messages over one connection, made through the outbound
guard (emailplatform.netguard) with the account's rule. The transaction is driven command by
command (MAIL, RCPT per recipient, DATA) so that each recipient's reply is reported: smtplib's
`sendmail` hides them when some recipients are refused.

Error policy (what the caller may do next):
- before the end of DATA nothing was accepted: `SmtpTransientError` (network, timeout, 4xx) is
  safe to retry, `SmtpPermanentError` (5xx, a refusal of ours before sending) is not worth it;
- once the message and its final dot were sent, a cut or a timeout before the server's reply is
  `SmtpOutcomeUnknown`: the server may have accepted it, so the caller must not resend blindly.

Replies from a peer that never greeted like an SMTP server are never repeated to the user
(netguard's rule); secrets never appear in a message (a server could echo them).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import re
import smtplib
import socket
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from emailplatform import netguard

if TYPE_CHECKING:
    from messages.models import Account

NOTIFY_VALUES = frozenset({"SUCCESS", "FAILURE", "DELAY", "NEVER"})
RET_VALUES = frozenset({"HDRS", "FULL"})
MAX_ENVID_LENGTH = 100  # RFC 3461 section 4.4
_BAD_ADDRESS_CHARS = re.compile(r"[\x00-\x20<>\x7f]")


@dataclass(frozen=True)
class SmtpEndpoint:
    host: str
    port: int
    security: str  # "ssl" | "starttls" | "none" (smtp_sync.models.Security values)
    username: str = ""
    password: str = ""
    oauth2_token: str = ""  # XOAUTH2 when set (password ignored)
    verify_certificate: bool = True  # False only when the account trusts a self-signed one
    timeout: float = 30.0
    local_hostname: str | None = None
    # The account's guard rule: internal addresses allowed (created by staff); see netguard.
    allow_internal: bool = False

    def __repr__(self) -> str:  # never the secrets
        return (
            f"SmtpEndpoint(host={self.host!r}, port={self.port}, security={self.security!r}, "
            f"username={self.username!r})"
        )

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class RecipientOutcome:
    address: str
    accepted: bool
    code: int  # the server's reply code at RCPT (or at DATA's end, for the accepted ones)
    reply: str  # readable reply text

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500


@dataclass(frozen=True)
class SendOutcome:
    recipients: list[RecipientOutcome] = field(default_factory=list)

    @property
    def accepted(self) -> list[RecipientOutcome]:
        return [r for r in self.recipients if r.accepted]

    @property
    def refused(self) -> list[RecipientOutcome]:
        return [r for r in self.recipients if not r.accepted]


class SmtpError(Exception):
    """`message`: a readable reason for the account's owner. `code`: the server's reply code
    when it gave one. `outcome`: the recipients' replies when the server answered RCPT."""

    def __init__(
        self, message: str, *, code: int | None = None, outcome: SendOutcome | None = None
    ):
        super().__init__(message)
        self.message = message
        self.code = code
        self.outcome = outcome


class SmtpTransientError(SmtpError):
    """Connect refused/timeout, 4xx before the message was accepted: safe to retry."""


class SmtpPermanentError(SmtpError):
    """5xx at MAIL/DATA, every recipient refused permanently, or a send we refuse to try."""


class SmtpAuthError(SmtpPermanentError):
    """The server refused the credentials (or offers no way to log in with them)."""


class SmtpOutcomeUnknown(SmtpError):
    """The data was sent but the final reply never came (cut, timeout): may be delivered."""


class _ConnectionLost(SmtpTransientError):
    """The server closed the connection before a reply (not a timeout)."""


# Encoding helpers ----------------------------------------------------------------------------
def xtext(value: str) -> str:
    """RFC 3461 xtext: '+', '=' and bytes outside '!'..'~' as '+XX'."""
    out = []
    for byte in value.encode("utf-8"):
        out.append(chr(byte) if 33 <= byte <= 126 and byte not in (43, 61) else f"+{byte:02X}")
    return "".join(out)


def smtp_data(raw: bytes) -> bytes:
    """RAW as the DATA payload: CRLF line ends (no bare CR or LF), dot-stuffed, terminated."""
    text = re.sub(rb"\r\n|\r|\n", b"\r\n", raw)
    if not text.endswith(b"\r\n"):
        text += b"\r\n"
    return re.sub(rb"(?m)^\.", b"..", text) + b".\r\n"


def _printable(text: str, limit: int = 300) -> str:
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reply_text(reply: bytes | str) -> str:
    if isinstance(reply, bytes):
        reply = reply.decode("utf-8", "replace")
    return _printable(reply)


def _address_checked(address: str, *, sender: bool = False) -> str:
    if sender and address == "":
        return address  # the null reverse-path
    if not address or _BAD_ADDRESS_CHARS.search(address) or "@" not in address:
        raise SmtpPermanentError(f"{address!r} is not a valid envelope address")
    return address


@functools.lru_cache(maxsize=1)
def _default_local_hostname() -> str:
    """smtplib asks the resolver for the FQDN at every connection; once is enough."""
    fqdn = socket.getfqdn()
    return fqdn if "." in fqdn else "localhost.localdomain"


@functools.lru_cache(maxsize=2)
@functools.lru_cache(maxsize=2)
def _tls_context(verify: bool) -> ssl.SSLContext:
    """The system CA store; without verification only for an account that trusts a
    self-signed certificate (any certificate is then accepted: TLS still encrypts). Built
    once per kind, like the IMAP one (smtp_sync.imap): a default context costs ~20 ms."""
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class _Scrubber:
    """Removes the secrets (and their base64 forms) from text shown to the user."""

    def __init__(self, endpoint: SmtpEndpoint) -> None:
        secrets = [s for s in (endpoint.password, endpoint.oauth2_token) if s]
        forms: set[str] = set()
        for secret in secrets:
            forms.add(secret)
            forms.add(base64.b64encode(secret.encode()).decode())
            forms.add(base64.b64encode(f"\0{endpoint.username}\0{secret}".encode()).decode())
        forms.add(base64.b64encode(_xoauth2(endpoint).encode()).decode())
        self._forms = sorted((f for f in forms if len(f) >= 3), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for form in self._forms:
            text = text.replace(form, "***")
        return text


def _xoauth2(endpoint: SmtpEndpoint) -> str:
    return f"user={endpoint.username}\1auth=Bearer {endpoint.oauth2_token}\1\1"


class _GuardedSMTP(smtplib.SMTP):
    """smtplib.SMTP over a socket from the guard; implicit TLS when CONTEXT is given
    (the certificate checked for the host name, whatever address was connected)."""

    def __init__(self, endpoint: SmtpEndpoint, implicit_tls: ssl.SSLContext | None) -> None:
        self._endpoint = endpoint
        self._implicit_tls = implicit_tls
        super().__init__(
            local_hostname=endpoint.local_hostname or _default_local_hostname(),
            timeout=endpoint.timeout,
        )

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = netguard.connect(
            host,
            port,
            timeout=timeout,
            policy=netguard.policy_for(self._endpoint.allow_internal),
            plaintext=self._endpoint.security == "none",
        )
        if self._implicit_tls is None:
            return sock
        try:
            return self._implicit_tls.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise


def _timed_out(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError)


def _connect_error(exc: BaseException, endpoint: SmtpEndpoint) -> SmtpError:
    """A failure before the session was ready, as a readable SmtpError."""
    where = endpoint.where
    if isinstance(exc, netguard.HostInvalid):
        return SmtpPermanentError(f"{endpoint.host!r}: {exc}")
    if isinstance(exc, netguard.AddressRefused):
        return SmtpPermanentError(str(exc))
    if isinstance(exc, netguard.HostNotFound):
        return SmtpTransientError(f"host {endpoint.host!r} not found ({exc.strerror})")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return SmtpTransientError(
            f"the TLS certificate of {endpoint.host} is not trusted ({exc.verify_message}); "
            "if the server uses a self-signed certificate, trust it in the account's SMTP "
            "settings"
        )
    if isinstance(exc, ssl.SSLError):
        return SmtpTransientError(f"TLS failure with {endpoint.host}: {exc.reason or exc}")
    if isinstance(exc, smtplib.SMTPConnectError):
        if not 200 <= exc.smtp_code < 600:
            return SmtpTransientError(f"{where} did not answer like an SMTP server")
        cls = SmtpPermanentError if exc.smtp_code >= 500 else SmtpTransientError
        text = _reply_text(exc.smtp_error)
        return cls(f"{where} refused the session: {exc.smtp_code} {text}", code=exc.smtp_code)
    if _timed_out(exc):
        return SmtpTransientError(
            f"no answer from {where} within {endpoint.timeout:g} s (not an SMTP server?)"
        )
    if isinstance(exc, ConnectionRefusedError):
        return SmtpTransientError(f"connection to {where} refused (is it the SMTP port?)")
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return SmtpTransientError(f"{where} closed the connection")
    if isinstance(exc, smtplib.SMTPResponseException):
        return SmtpTransientError(f"{where} did not answer like an SMTP server")
    if isinstance(exc, OSError):
        return SmtpTransientError(f"cannot connect to {where}: {exc.strerror or exc}")
    return SmtpTransientError(f"SMTP session with {where} failed: {type(exc).__name__}")


def _starttls(smtp: _GuardedSMTP, context: ssl.SSLContext, endpoint: SmtpEndpoint) -> None:
    try:
        smtp.starttls(context=context)
    except smtplib.SMTPResponseException as exc:
        if not 400 <= exc.smtp_code < 600:
            raise
        cls = SmtpPermanentError if exc.smtp_code >= 500 else SmtpTransientError
        text = _reply_text(exc.smtp_error)
        raise cls(
            f"{endpoint.where} refused STARTTLS: {exc.smtp_code} {text}", code=exc.smtp_code
        ) from None


class SmtpSession:
    """One connection reused for a burst of `send` calls (RSET after an unfinished
    transaction). A context manager: connects on entry, QUIT on exit. A connection the server
    dropped between two messages is made again before anything of the next one is sent."""

    def __init__(self, endpoint: SmtpEndpoint) -> None:
        self.endpoint = endpoint
        self.connections = 0  # connections opened (the reuse is visible)
        self._smtp: _GuardedSMTP | None = None
        self._pending = False  # a transaction was started and not finished: RSET first
        self._scrub = _Scrubber(endpoint)

    def __enter__(self) -> SmtpSession:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Connection ------------------------------------------------------------------------------
    def connect(self) -> None:
        endpoint = self.endpoint
        if endpoint.security not in ("ssl", "starttls", "none"):
            raise SmtpPermanentError(f"unknown SMTP security {endpoint.security!r}")
        self._drop()
        context = _tls_context(endpoint.verify_certificate)
        smtp: _GuardedSMTP | None = None
        try:
            host = netguard.normalize_host(endpoint.host)
            smtp = _GuardedSMTP(endpoint, context if endpoint.security == "ssl" else None)
            smtp._host = host  # STARTTLS checks the certificate for this name
            code, greeting = smtp.connect(host, endpoint.port)
            if code != 220:
                raise smtplib.SMTPConnectError(code, greeting)
            smtp.ehlo_or_helo_if_needed()
            if endpoint.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise SmtpPermanentError(
                        f"{endpoint.where} does not offer STARTTLS: choose SSL/TLS or another port"
                    )
                _starttls(smtp, context, endpoint)
                smtp.ehlo()
        except SmtpError:
            self._abandon(smtp)
            raise
        except smtplib.SMTPHeloError as exc:
            self._abandon(smtp)
            if not 200 <= exc.smtp_code < 600:
                raise SmtpTransientError(
                    f"{endpoint.where} did not answer EHLO like an SMTP server"
                ) from None
            text = _reply_text(exc.smtp_error)
            raise SmtpTransientError(
                f"{endpoint.where} refused EHLO/HELO: {exc.smtp_code} {text}", code=exc.smtp_code
            ) from None
        except (netguard.GuardError, OSError, smtplib.SMTPException) as exc:
            self._abandon(smtp)
            raise _connect_error(exc, endpoint) from None
        self._smtp = smtp
        self.connections += 1
        self._pending = False
        try:
            self._login(smtp)
        except BaseException:
            self._drop()
            raise

    def _login(self, smtp: _GuardedSMTP) -> None:
        endpoint = self.endpoint
        if not (endpoint.oauth2_token or endpoint.password):
            return
        where = endpoint.where
        offered = smtp.esmtp_features.get("auth", "").upper().split()
        try:
            if endpoint.oauth2_token:
                if "XOAUTH2" not in offered:
                    raise SmtpAuthError(f"{where} does not offer XOAUTH2 authentication")
                sasl = _xoauth2(endpoint)
                smtp.auth("XOAUTH2", lambda challenge=None: sasl if challenge is None else "")
            else:
                if not offered and endpoint.security == "none":
                    # A plain local relay that trusts its network (Postfix's mynetworks) offers no
                    # AUTH: send unauthenticated; one that wants a login refuses at MAIL (530).
                    return
                if not offered:
                    raise SmtpAuthError(
                        f"{where} does not offer authentication (AUTH) on this connection"
                    )
                smtp.login(endpoint.username, endpoint.password)
        except smtplib.SMTPAuthenticationError as exc:
            reply = self._scrub(_reply_text(exc.smtp_error))
            if 400 <= exc.smtp_code < 500:
                raise SmtpTransientError(
                    f"login temporarily refused by {where}: {exc.smtp_code} {reply}",
                    code=exc.smtp_code,
                ) from None
            raise SmtpAuthError(
                f"login refused by {where}: {exc.smtp_code} {reply}", code=exc.smtp_code
            ) from None
        except smtplib.SMTPNotSupportedError:
            raise SmtpAuthError(f"{where} does not offer authentication (AUTH)") from None
        except UnicodeError:
            raise SmtpAuthError(
                "the login name or password has characters the login method cannot carry"
            ) from None
        except smtplib.SMTPException as exc:
            if isinstance(exc, smtplib.SMTPServerDisconnected) or _timed_out(exc):
                raise _connect_error(exc, endpoint) from None
            raise SmtpAuthError(
                f"{where} offers no login method this client supports "
                f"(it offers: {' '.join(offered) or 'none'})"
            ) from None
        except OSError as exc:
            raise _connect_error(exc, endpoint) from None

    def close(self) -> None:
        """QUIT politely; the socket is closed whatever the server does."""
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            pass
        finally:
            smtp.close()

    def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        self._abandon(smtp)

    @staticmethod
    def _abandon(smtp: smtplib.SMTP | None) -> None:
        if smtp is not None:
            with contextlib.suppress(Exception):
                smtp.close()

    def _ready(self) -> tuple[_GuardedSMTP, bool]:
        """The connection, and whether it is reused unchecked. A transaction left unfinished
        is reset (RSET; the connection made again when that fails). After a completed one the
        server has reset itself (RFC 5321 4.1.1.4): no RSET, saving a round trip per message;
        a drop meanwhile then shows at MAIL, before anything of the message is sent."""
        if self._smtp is not None and self._pending:
            self._reset()
        if self._smtp is None:
            self.connect()
            reused = False
        else:
            reused = True
        assert self._smtp is not None
        return self._smtp, reused

    # Sending ---------------------------------------------------------------------------------
    def send(
        self,
        envelope_from: str,
        recipients: list[str],
        raw: bytes,
        *,
        envid: str | None = None,
        notify: tuple[str, ...] = ("FAILURE", "DELAY"),
        ret: str = "HDRS",
    ) -> SendOutcome:
        """Send RAW to RECIPIENTS; each one's outcome is in the result (refused ones too).

        Raises SmtpTransientError/SmtpPermanentError before the end of DATA (nothing was
        accepted), SmtpOutcomeUnknown when the final reply to DATA never came."""
        _address_checked(envelope_from, sender=True)
        if not recipients:
            raise SmtpPermanentError("no recipient")
        for address in recipients:
            _address_checked(address)
        _dsn_checked(envid, notify, ret)
        data = smtp_data(raw)
        while True:
            smtp, reused = self._ready()
            self._pending = True
            mail_options, utf8 = self._mail_options(
                smtp, envelope_from, recipients, raw, envid, ret
            )
            smtp.command_encoding = "utf-8" if utf8 else "ascii"
            try:
                code, reply = self._command(smtp, "MAIL", f"FROM:<{envelope_from}>{mail_options}")
            except _ConnectionLost:
                if reused:
                    continue  # dropped while idle: once more on a new connection
                raise
            if code == 421 and reused:
                continue
            break
        if code != 250:
            raise self._refused("MAIL FROM", code, reply)
        dsn = smtp.has_extn("dsn")
        outcomes: list[RecipientOutcome] = []
        for address in recipients:
            options = _rcpt_options(address, notify) if dsn else ""
            code, reply = self._command(smtp, "RCPT", f"TO:<{address}>{options}")
            outcomes.append(RecipientOutcome(address, 200 <= code < 300, code, reply))
        if not any(o.accepted for o in outcomes):
            raise self._all_refused(outcomes)

        code, reply = self._command(smtp, "DATA", "")
        if code != 354:
            raise self._refused("DATA", code, reply)
        try:
            smtp.sock.sendall(data)
        except OSError as exc:
            self._drop()
            raise SmtpTransientError(
                f"connection to {self.endpoint.where} lost while sending the message: "
                f"{exc.strerror or exc}"
            ) from None
        try:
            code, reply_bytes = smtp.getreply()
        except (OSError, smtplib.SMTPException) as exc:
            self._drop()
            how = (
                f"no reply within {self.endpoint.timeout:g} s"
                if _timed_out(exc)
                else "the connection was cut"
            )
            raise SmtpOutcomeUnknown(
                f"{self.endpoint.where}: the message was sent but the server's confirmation "
                f"never came ({how}): it may have been delivered"
            ) from None
        reply = _reply_text(reply_bytes)
        if not 200 <= code < 300:
            raise self._refused("the end of DATA", code, reply)
        self._pending = False
        return SendOutcome(
            [RecipientOutcome(o.address, True, code, reply) if o.accepted else o for o in outcomes]
        )

    def _mail_options(
        self,
        smtp: _GuardedSMTP,
        envelope_from: str,
        recipients: list[str],
        raw: bytes,
        envid: str | None,
        ret: str,
    ) -> tuple[str, bool]:
        """MAIL FROM parameters for what the server offers and the message needs; a message
        the server cannot take is refused here, before anything is sent."""
        where = self.endpoint.where
        options: list[str] = []
        limit = smtp.esmtp_features.get("size", "").strip()
        if limit.isdigit() and int(limit) > 0 and len(raw) > int(limit):
            raise SmtpPermanentError(
                f"the message ({len(raw):,} bytes) is larger than {where} accepts "
                f"({int(limit):,} bytes)"
            )
        if smtp.has_extn("size"):
            options.append(f"SIZE={len(raw)}")
        header_end = raw.find(b"\r\n\r\n")
        if header_end < 0:
            header_end = raw.find(b"\n\n")
        headers = raw if header_end < 0 else raw[:header_end]
        utf8_addresses = not all(a.isascii() for a in (envelope_from, *recipients))
        utf8 = utf8_addresses or not headers.isascii()
        if utf8 and not smtp.has_extn("smtputf8"):
            what = "addresses" if utf8_addresses else "header fields"
            raise SmtpPermanentError(
                f"{where} does not accept internationalized mail (no SMTPUTF8) and the "
                f"message has non-ASCII {what}"
            )
        if not raw.isascii() or utf8:
            if not smtp.has_extn("8bitmime"):
                raise SmtpPermanentError(
                    f"{where} accepts 7-bit messages only (no 8BITMIME): the message must be "
                    "encoded (quoted-printable or base64)"
                )
            options.append("BODY=8BITMIME")
        if utf8:
            options.append("SMTPUTF8")
        if smtp.has_extn("dsn"):
            options.append(f"RET={ret}")
            if envid:
                options.append(f"ENVID={xtext(envid)}")
        return ("".join(f" {o}" for o in options), utf8)

    def _command(self, smtp: _GuardedSMTP, verb: str, args: str) -> tuple[int, str]:
        """One command before the end of DATA: a broken connection or a reply that is not
        SMTP is a SmtpTransientError (nothing was accepted); a 421 closes the session."""
        where = self.endpoint.where
        try:
            smtp.putcmd(verb, args)
            code, reply = smtp.getreply()
        except (OSError, smtplib.SMTPException) as exc:
            self._drop()
            if _timed_out(exc):
                raise SmtpTransientError(
                    f"no reply from {where} to {verb} within {self.endpoint.timeout:g} s"
                ) from None
            raise _ConnectionLost(f"{where} closed the connection at {verb}") from None
        if not 200 <= code < 600:
            self._drop()
            raise SmtpTransientError(f"{where} sent an unreadable reply to {verb}")
        if code == 421:
            self._drop()
        return code, _reply_text(reply)

    def _reset(self) -> None:
        """After a refused transaction: the connection stays usable (or is dropped)."""
        if self._smtp is None:
            return
        try:
            code, _reply = self._smtp.rset()
        except (OSError, smtplib.SMTPException):
            code = -1
        if code != 250:
            self._drop()
        self._pending = False

    def _refused(self, step: str, code: int, reply: str) -> SmtpError:
        self._reset()
        cls = SmtpPermanentError if code >= 500 else SmtpTransientError
        return cls(f"{self.endpoint.where} refused {step}: {code} {reply}", code=code)

    def _all_refused(self, outcomes: list[RecipientOutcome]) -> SmtpError:
        """Every recipient refused: permanent only when every refusal is (a 4xx one is worth
        a retry; the outcome says which is which)."""
        self._reset()
        outcome = SendOutcome(outcomes)
        first = outcomes[0]
        detail = f"{first.code} {first.reply}" + (
            f" (and {len(outcomes) - 1} more)" if len(outcomes) > 1 else ""
        )
        if any(o.temporary for o in outcomes):
            return SmtpTransientError(
                f"{self.endpoint.where} refused every recipient for now: {detail}",
                code=first.code,
                outcome=outcome,
            )
        return SmtpPermanentError(
            f"{self.endpoint.where} refused every recipient: {detail}",
            code=first.code,
            outcome=outcome,
        )


def _dsn_checked(envid: str | None, notify: tuple[str, ...], ret: str) -> None:
    if envid is not None and (not envid or len(envid) > MAX_ENVID_LENGTH or not envid.isascii()):
        raise ValueError(f"ENVID is 1 to {MAX_ENVID_LENGTH} ASCII characters")
    values = {n.upper() for n in notify}
    if not values or not values <= NOTIFY_VALUES or ("NEVER" in values and len(values) > 1):
        raise ValueError(f"NOTIFY is NEVER or some of SUCCESS, FAILURE, DELAY: {notify!r}")
    if ret.upper() not in RET_VALUES:
        raise ValueError(f"RET is HDRS or FULL: {ret!r}")


def _rcpt_options(address: str, notify: tuple[str, ...]) -> str:
    """NOTIFY, and ORCPT for an ASCII address (RFC 3461 rfc822 type). A non-ASCII address
    has no ORCPT: its utf-8 type (RFC 6533) is optional and the MTA records the address."""
    options = f" NOTIFY={','.join(n.upper() for n in notify)}"
    if address.isascii():
        options += f" ORCPT=rfc822;{xtext(address)}"
    return options


def smtp_endpoint_for(account: Account) -> SmtpEndpoint:
    """The account's SMTP server from its settings and decrypted credentials; the login name
    is the SMTP one, or the IMAP one when blank."""
    from django.conf import settings as django_settings

    from .models import ImapSettings

    try:
        settings = account.imap_settings
    except ImapSettings.DoesNotExist:
        raise SmtpPermanentError("the account has no SMTP settings") from None
    if not settings.smtp_host:
        raise SmtpPermanentError("the account has no SMTP server")
    credentials = account.get_credentials()
    return SmtpEndpoint(
        host=settings.smtp_host,
        port=settings.smtp_port,
        security=settings.smtp_security,
        username=settings.smtp_username or settings.username,
        password=credentials.get("password", ""),
        oauth2_token=credentials.get("oauth2_token", ""),
        verify_certificate=not settings.smtp_trust_self_signed,
        timeout=django_settings.SMTP_TIMEOUT_SECONDS,
        allow_internal=settings.allow_internal,
    )
