"""The one guard for outbound connections to addresses that users type.

Every TCP connection the platform opens to a host a user gave it (IMAP and SMTP servers now,
webhook URLs later) goes through here:

- the host is checked for syntax (`normalize_host`): empty or over-long labels, IDNA, bracketed
  IPv6 literals, a trailing dot;
- it is resolved **once** (`resolve`), and every address the resolver gives is checked: loopback,
  private, link-local, CGNAT, multicast, reserved and unspecified ranges (IPv4-mapped, NAT64 and
  6to4 embeddings unwrapped) are refused unless the operator's allow list names them
  (`OUTBOUND_ALLOWED_NETWORKS`) or the policy allows internal ranges (an account created by
  staff, `OUTBOUND_STAFF_ALLOW_INTERNAL`);
- the connection is made to the checked address (`connect`), never to the name again, so a DNS
  answer that changes between the check and the connection (rebinding) cannot slip through.
  TLS must still verify the certificate for the *name*: wrap the returned socket with
  `server_hostname=host` (the normalized host).

A client library gets the guard by replacing its own socket creation:

    sock = netguard.connect(host, port, timeout=10, policy=netguard.policy_for(allow_internal))
    sock = ssl_context.wrap_socket(sock, server_hostname=netguard.normalize_host(host))

    # smtplib: subclass SMTP and override _get_socket(host, port, timeout) to return
    # netguard.connect(host, port, timeout=timeout, policy=...); SMTP_SSL wraps it as above.
    # HTTP (webhooks): resolve() and connect to CheckedAddress.ip with the Host header / SNI of
    # the name, or pass a socket from connect() to the client.

`connect(..., plaintext=True)` also applies the rule that unencrypted protocols are allowed
only to allow-listed hosts. Refusals are `AddressRefused`, whose message is safe to show to a
user: it never says which range (or which address) an internal name resolved to. Callers must
also never show bytes received from a peer that did not prove it speaks their protocol.

This module knows nothing of accounts or users; `policy_for` reads Django's settings when they
are configured (and an empty allow list otherwise).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_NAME_LENGTH = 253  # without the trailing dot (RFC 1035: 255 octets on the wire)
MAX_LABEL_LENGTH = 63
MAX_ATTEMPTS = 4  # addresses of one name tried in turn (each with the full timeout)

_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")


class GuardError(Exception):
    """A refusal whose message can be shown to the user who typed the host."""


class HostInvalid(GuardError, ValueError):
    """Not a host name or an IP literal."""


class HostNotFound(GuardError):
    """The resolver has no address for the name."""

    def __init__(self, message: str, strerror: str = "") -> None:
        super().__init__(message)
        self.strerror = strerror


class AddressRefused(GuardError):
    """The policy refuses the destination.

    `kind`: "internal" (an internal address, not allowed), "plaintext" (an unencrypted protocol
    to a host not on the allow list) or "unusable" (unspecified, broadcast or multicast).
    """

    def __init__(self, message: str, *, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


# Host syntax ---------------------------------------------------------------------------------
def normalize_host(host: str) -> str:
    """HOST as the resolver and TLS must see it, or HostInvalid with a readable reason.

    `[::1]` and `::1` give `::1`; names are IDNA-encoded (A-labels), lower-cased, without a
    trailing dot; every label is 1-63 characters and the name at most 253.
    """
    if not isinstance(host, str):
        raise HostInvalid("Enter a host name or an IP address.")
    text = host.strip()
    if not text:
        raise HostInvalid("Enter a host name or an IP address.")
    if text.startswith("[") or text.endswith("]"):
        inner = text[1:-1] if text.startswith("[") and text.endswith("]") else None
        try:
            address = ipaddress.IPv6Address(inner or "")
        except ValueError:
            message = "Brackets enclose an IPv6 address only, e.g. [2001:db8::1]."
            raise HostInvalid(message) from None
        return _literal(address)
    if ":" in text:
        try:
            literal = ipaddress.IPv6Address(text)
        except ValueError:
            raise HostInvalid(
                "Not a valid IPv6 address (give the port in its own field)."
            ) from None
        return _literal(literal)
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        pass
    name = text[:-1] if text.endswith(".") else text
    if not name:
        raise HostInvalid("Enter a host name or an IP address.")
    labels = name.split(".")
    encoded = []
    for label in labels:
        if not label:
            raise HostInvalid("A host name cannot have an empty label (two dots in a row).")
        try:
            ascii_label = label.encode("idna").decode("ascii").lower()
        except UnicodeError:
            raise HostInvalid(
                f"A label of a host name has 1 to {MAX_LABEL_LENGTH} characters."
                if len(label) > MAX_LABEL_LENGTH
                else "Not a valid host name."
            ) from None
        if not 0 < len(ascii_label) <= MAX_LABEL_LENGTH:
            raise HostInvalid(f"A label of a host name has 1 to {MAX_LABEL_LENGTH} characters.")
        if not _LABEL.match(ascii_label):
            raise HostInvalid(
                "Not a valid host name: letters, digits and hyphens only "
                "(not at the start or end of a label)."
            )
        encoded.append(ascii_label)
    result = ".".join(encoded)
    if len(result) > MAX_NAME_LENGTH:
        raise HostInvalid(f"A host name has at most {MAX_NAME_LENGTH} characters.")
    return result


def _literal(address: ipaddress.IPv6Address) -> str:
    if address.scope_id:
        raise HostInvalid("IPv6 zone identifiers (%...) are not allowed.")
    return str(address)


# Address ranges ------------------------------------------------------------------------------
def effective_address(address: IPAddress) -> IPAddress:
    """The address a connection really reaches: IPv4-mapped IPv6 is the IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    return None


def unusable(address: IPAddress) -> bool:
    """Never a destination: unspecified (0.0.0.0 reaches this host), broadcast, multicast."""
    address = effective_address(address)
    if address.is_unspecified or address.is_multicast:
        return True
    if isinstance(address, ipaddress.IPv4Address):
        return address in _THIS_NETWORK or address == ipaddress.IPv4Address("255.255.255.255")
    return False


def is_internal(address: IPAddress) -> bool:
    """Loopback, private, link-local, CGNAT, reserved, documentation, site-local... anything
    that is not a global unicast address; IPv4 embedded in IPv6 (mapped, NAT64, 6to4) counts
    as the IPv4 address it carries."""
    address = effective_address(address)
    if unusable(address):
        return True
    if isinstance(address, ipaddress.IPv6Address):
        if address in _NAT64_LOCAL or address.is_site_local or address.teredo is not None:
            return True
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_internal(embedded)
    elif address in _CGNAT:
        return True
    return (
        not address.is_global
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
    )


# The allow list ------------------------------------------------------------------------------
@dataclass(frozen=True)
class AllowEntry:
    """One entry of OUTBOUND_ALLOWED_NETWORKS: a network (CIDR or address) or a host name,
    with or without a port."""

    network: IPNetwork | None = None
    name: str | None = None
    port: int | None = None

    def matches(self, host: str, address: IPAddress | None, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.name is not None:
            return host == self.name
        return address is not None and self.network is not None and address in self.network


def parse_allow_entry(text: str) -> AllowEntry:
    """`127.0.0.1`, `10.0.0.0/8`, `127.0.0.1:1143`, `10.0.0.0/8:993`, `::1`, `[::1]:1143`,
    `[fd00::/8]:993`, `imap.internal`, `imap.internal:143`. ValueError when unreadable."""
    entry = text.strip()
    port: int | None = None
    if entry.startswith("["):
        inner, sep, rest = entry[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"unreadable allow-list entry {text!r}")
        entry, port = inner, _port(rest[1:], text) if rest else None
    elif entry.count(":") == 1:
        entry, port_text = entry.split(":")
        port = _port(port_text, text)
    try:
        network = ipaddress.ip_network(entry, strict=False)
    except ValueError:
        pass
    else:
        if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
            mapped = network.network_address.ipv4_mapped
            if mapped is not None:  # ::ffff:a.b.c.d is matched as a.b.c.d
                network = ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}")
        return AllowEntry(network=network, port=port)
    try:
        return AllowEntry(name=normalize_host(entry), port=port)
    except HostInvalid:
        raise ValueError(f"unreadable allow-list entry {text!r}") from None


def _port(text: str, entry: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port in allow-list entry {entry!r}")
    return int(text)


@lru_cache(maxsize=16)
def parse_allow_list(entries: tuple[str, ...]) -> tuple[AllowEntry, ...]:
    return tuple(parse_allow_entry(e) for e in entries if e.strip())


@dataclass(frozen=True)
class Policy:
    """What one connection may reach. `allow_internal`: internal ranges too (not the
    unusable ones); `allowed`: the operator's allow list."""

    allow_internal: bool = False
    allowed: tuple[AllowEntry, ...] = field(default=())

    def allow_listed(self, host: str, address: IPAddress | None, port: int) -> bool:
        return any(entry.matches(host, address, port) for entry in self.allowed)


def policy_for(allow_internal: bool = False) -> Policy:
    """The policy from Django's settings (OUTBOUND_ALLOWED_NETWORKS), or an empty allow list
    outside Django."""
    entries: Sequence[str] = ()
    try:
        from django.conf import settings

        if settings.configured:
            entries = getattr(settings, "OUTBOUND_ALLOWED_NETWORKS", ()) or ()
    except ImportError:  # pragma: no cover - the guard is usable without Django
        pass
    if isinstance(entries, str):
        entries = entries.split(",")
    return Policy(allow_internal=allow_internal, allowed=parse_allow_list(tuple(entries)))


# Resolving and connecting --------------------------------------------------------------------
Resolver = Callable[[str, int], list[tuple]]


def system_resolver(host: str, port: int) -> list[tuple]:
    """The resolver `resolve` uses (tests replace it to control answers)."""
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)


@dataclass(frozen=True)
class CheckedAddress:
    host: str  # the normalized name (for TLS: SNI and certificate verification)
    port: int
    address: IPAddress  # the address a connection must go to
    allow_listed: bool

    @property
    def family(self) -> int:
        return socket.AF_INET if self.address.version == 4 else socket.AF_INET6

    @property
    def sockaddr(self) -> tuple:
        return (str(self.address), self.port)


def resolve(
    host: str,
    port: int,
    *,
    policy: Policy | None = None,
    plaintext: bool = False,
    resolver: Resolver | None = None,
) -> list[CheckedAddress]:
    """Resolve HOST once and check every address; all of them must pass, or AddressRefused
    (a name with one internal address among public ones is refused: no mixing). Raises
    HostInvalid, HostNotFound, AddressRefused."""
    policy = policy or policy_for()
    name = normalize_host(host)
    if not isinstance(port, int) or not 0 < port < 65536:
        raise HostInvalid("A port is a number from 1 to 65535.")
    try:
        infos = (resolver or system_resolver)(name, port)
    except socket.gaierror as exc:
        raise HostNotFound(f"host {name!r} not found ({exc.strerror})", exc.strerror) from exc
    except UnicodeError as exc:  # a resolver's own IDNA step; normalize_host caught most
        raise HostInvalid("Not a valid host name.") from exc
    checked: list[CheckedAddress] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = effective_address(ipaddress.ip_address(sockaddr[0].split("%", 1)[0]))
        if any(c.address == address for c in checked):
            continue
        checked.append(_check(name, port, address, policy, plaintext))
    if not checked:
        raise HostNotFound(f"host {name!r} not found (no IP address)")
    return checked


def _check(
    name: str, port: int, address: IPAddress, policy: Policy, plaintext: bool
) -> CheckedAddress:
    if unusable(address):
        logger.info("outbound: %s:%s refused: %s is not a unicast address", name, port, address)
        raise AddressRefused(f"{name} is not a usable server address.", kind="unusable")
    listed = policy.allow_listed(name, address, port)
    if not listed and not policy.allow_internal and is_internal(address):
        logger.info("outbound: %s:%s refused: %s is internal", name, port, address)
        raise AddressRefused(
            f"{name}: connections to internal network addresses are not allowed.",
            kind="internal",
        )
    if plaintext and not listed:
        raise AddressRefused(
            f"An unencrypted connection to {name} is not allowed: use SSL/TLS or STARTTLS "
            "(plain connections are for hosts on the operator's allow list only).",
            kind="plaintext",
        )
    return CheckedAddress(host=name, port=port, address=address, allow_listed=listed)


def connect(
    host: str,
    port: int,
    *,
    timeout: float | None,
    policy: Policy | None = None,
    plaintext: bool = False,
    resolver: Resolver | None = None,
) -> socket.socket:
    """A TCP socket connected to a checked address of HOST (resolved once), for any client
    (IMAP, SMTP, HTTP). Wrap it for TLS with server_hostname=normalize_host(host).

    Raises the guard's errors, or the OSError of the last address tried (ConnectionRefused,
    TimeoutError...)."""
    addresses = resolve(host, port, policy=policy, plaintext=plaintext, resolver=resolver)
    return connect_checked(addresses, timeout=timeout)


def connect_checked(addresses: Iterable[CheckedAddress], *, timeout: float | None) -> socket.socket:
    """Connect to the first reachable of ADDRESSES (from `resolve`, never resolved again)."""
    error: OSError | None = None
    for checked in list(addresses)[:MAX_ATTEMPTS]:
        sock = socket.socket(checked.family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.settimeout(timeout)
            sock.connect(checked.sockaddr)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    raise error if error is not None else OSError("no address to connect to")
