"""The outbound guard: host syntax, address ranges, the allow list, resolve-once and connect to
the checked address (real sockets on loopback; the resolver is replaced only where a test must
control what a name resolves to)."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time

import pytest

from emailplatform import netguard
from tests.imap_fixtures import TinyServer


def answers(*addresses: str):
    """getaddrinfo-shaped answers for ADDRESSES."""
    out = []
    for address in addresses:
        if ":" in address:
            out.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, 0, 0, 0)))
        else:
            out.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, 0)))
    return out


class CountingResolver:
    """Answers each name with the next of SEQUENCE (the last repeats): DNS that changes its
    answer between two lookups, as in DNS rebinding. Counts the lookups."""

    def __init__(self, *sequence: tuple[str, ...]) -> None:
        self.sequence = list(sequence)
        self.calls: list[str] = []

    def __call__(self, host: str, port: int):
        self.calls.append(host)
        index = min(len(self.calls) - 1, len(self.sequence) - 1)
        return [(*a[:4], (a[4][0], port, *a[4][2:])) for a in answers(*self.sequence[index])]


@pytest.mark.parametrize(
    ("typed", "normalized"),
    [
        ("imap.example.com", "imap.example.com"),
        ("IMAP.Example.COM.", "imap.example.com"),  # trailing dot ok
        ("Bücher.example", "xn--bcher-kva.example"),  # IDNA
        ("[::1]", "::1"),
        ("[2001:DB8::1]", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("192.0.2.7", "192.0.2.7"),
        ("127.1", "127.1"),  # legacy numeric forms stay names: resolved, then checked
        ("2130706433", "2130706433"),
        ("0x7f000001", "0x7f000001"),
        ("a" * 63 + ".example", "a" * 63 + ".example"),
    ],
)
def test_hosts_are_normalized(typed, normalized):
    assert netguard.normalize_host(typed) == normalized


@pytest.mark.parametrize(
    ("typed", "why"),
    [
        ("", "Enter a host"),
        ("a..b", "empty label"),
        (".example", "empty label"),
        ("a" * 64 + ".example", "1 to 63"),
        (".".join(["a" * 63] * 4), "at most 253"),  # 255 characters
        ("-bad.example", "hyphens"),
        ("bad-.example", "hyphens"),
        ("a b.example", "Not a valid host name"),
        ("imap.example.com:993", "IPv6"),
        ("[127.0.0.1]", "Brackets"),
        ("[::1", "Brackets"),
        ("fe80::1%eth0", "zone"),
    ],
)
def test_bad_hosts_are_refused_with_a_reason(typed, why):
    with pytest.raises(netguard.HostInvalid, match=why):
        netguard.normalize_host(typed)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.255.0.9",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # CGNAT
        "0.0.0.0",  # noqa: S104
        "0.1.2.3",
        "224.0.0.1",
        "255.255.255.255",
        "240.0.0.1",
        "192.0.2.1",
        "198.18.0.1",
        "::1",
        "::",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "fd00::1",
        "fe80::1",
        "fec0::1",
        "ff02::1",
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "64:ff9b:1::1",
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2001::1",  # Teredo
        "2001:db8::1",
    ],
)
def test_internal_addresses(address):
    assert netguard.is_internal(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "2606:4700::1", "64:ff9b::808:808", "2002:808:808::1"]
)
def test_public_addresses(address):
    assert not netguard.is_internal(ipaddress.ip_address(address))


def test_allow_list_entries():
    entries = netguard.parse_allow_list(
        (
            "127.0.0.1:1143",
            "10.0.0.0/8",
            "[::1]:1143",
            "imap.internal:993",
            "::ffff:192.168.1.0/120",
        )
    )
    policy = netguard.Policy(allowed=entries)
    ip = ipaddress.ip_address
    assert policy.allow_listed("x", ip("127.0.0.1"), 1143)
    assert not policy.allow_listed("x", ip("127.0.0.1"), 1144)
    assert policy.allow_listed("x", ip("10.200.0.1"), 22)
    assert policy.allow_listed("x", ip("::1"), 1143)
    assert policy.allow_listed("imap.internal", None, 993)
    assert not policy.allow_listed("imap.internal", None, 143)
    assert policy.allow_listed("x", ip("192.168.1.9"), 1)  # a mapped entry matches IPv4
    for bad in ("10.0.0.0/33", "[::1", "host:port", "1.2.3.4:0", "a..b"):
        with pytest.raises(ValueError):
            netguard.parse_allow_entry(bad)


def test_settings_refuse_an_unreadable_allow_list():
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "emailplatform.settings",
        "OUTBOUND_ALLOWED_NETWORKS": "10.0.0.0/8,not a network",
    }
    result = subprocess.run(
        [sys.executable, "-c", "from django.conf import settings; settings.DEBUG"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "OUTBOUND_ALLOWED_NETWORKS: unreadable allow-list entry" in result.stderr


def test_every_answer_must_pass():
    """A name with one internal address among public ones is refused: no mixing."""
    resolver = CountingResolver(("93.184.216.34", "10.0.0.5"))
    with pytest.raises(netguard.AddressRefused) as refused:
        netguard.resolve("mixed.test", 993, policy=netguard.Policy(), resolver=resolver)
    assert refused.value.kind == "internal"
    assert "10.0.0.5" not in str(refused.value), "the internal address is not told"


def test_unusable_addresses_are_refused_even_when_allowed():
    policy = netguard.Policy(
        allow_internal=True, allowed=netguard.parse_allow_list(("0.0.0.0/0", "::/0"))
    )
    for host in ("0.0.0.0", "::", "224.0.0.1"):  # noqa: S104
        with pytest.raises(netguard.AddressRefused) as refused:
            netguard.resolve(host, 993, policy=policy)
        assert refused.value.kind == "unusable"


def test_plaintext_only_to_allow_listed_hosts():
    public = CountingResolver(("93.184.216.34",))
    with pytest.raises(netguard.AddressRefused) as refused:
        netguard.resolve("imap.public.test", 143, policy=netguard.Policy(), plaintext=True,
                         resolver=public)  # fmt: skip
    assert refused.value.kind == "plaintext"
    staff = netguard.Policy(allow_internal=True)
    with pytest.raises(netguard.AddressRefused, match="unencrypted"):
        netguard.resolve("127.0.0.1", 143, policy=staff, plaintext=True)
    listed = netguard.Policy(allowed=netguard.parse_allow_list(("127.0.0.1:143",)))
    [checked] = netguard.resolve("127.0.0.1", 143, policy=listed, plaintext=True)
    assert checked.allow_listed


def test_connect_resolves_once_and_connects_to_the_checked_address():
    """The first answer is checked and used; later answers (rebinding) are never asked for."""
    with TinyServer("127.0.0.1") as server:
        resolver = CountingResolver(("127.0.0.1",), ("10.9.9.9",))
        policy = netguard.Policy(allowed=netguard.parse_allow_list((f"127.0.0.1:{server.port}",)))
        sock = netguard.connect(
            "mail.rebind.test", server.port, timeout=5, policy=policy, resolver=resolver
        )
        with sock:
            assert sock.getpeername()[:2] == ("127.0.0.1", server.port)
        assert resolver.calls == ["mail.rebind.test"]
        deadline = time.monotonic() + 5
        while not server.peers and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.peers == ["127.0.0.1"]


def test_refused_names_are_never_connected():
    with TinyServer("127.0.0.1") as server:
        for host in ("127.0.0.1", "127.1", "2130706433", "0x7f000001", "localhost"):
            with pytest.raises(netguard.AddressRefused):
                netguard.connect(host, server.port, timeout=5, policy=netguard.Policy())
        time.sleep(0.2)
        assert server.connections == 0


def test_an_ipv4_mapped_address_connects_over_ipv4():
    with TinyServer("127.0.0.1") as server:
        policy = netguard.Policy(allowed=netguard.parse_allow_list((f"127.0.0.1:{server.port}",)))
        with netguard.connect("::ffff:127.0.0.1", server.port, timeout=5, policy=policy) as sock:
            assert sock.family == socket.AF_INET
            assert sock.getpeername()[0] == "127.0.0.1"


def test_host_not_found_is_its_own_error():
    with pytest.raises(netguard.HostNotFound, match="not found"):
        netguard.resolve("no-such-host.invalid", 993, policy=netguard.Policy())


def self_signed(name: str, directory):
    """A certificate for NAME and its key, as files; the certificate is its own CA."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_tls_verifies_the_name_while_connecting_to_the_checked_address(tmp_path, monkeypatch):
    """The IMAP client connects to the checked IP, and TLS sends the name (SNI) and verifies
    the certificate for it: a certificate for another name fails."""
    from smtp_sync.imap import GuardedIMAPClient

    cert_file, key_file = self_signed("imap.guard.test", tmp_path)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert_file, key_file)
    client_context = ssl.create_default_context(cafile=str(cert_file))
    resolver = CountingResolver(("127.0.0.1",))
    monkeypatch.setattr(netguard, "system_resolver", resolver)
    greeting = b"* OK IMAP4rev1 ready\r\n"
    with TinyServer("127.0.0.1", greeting=greeting, imap=True, ssl_context=server_context) as s:
        policy = netguard.Policy(allowed=netguard.parse_allow_list((f"127.0.0.1:{s.port}",)))
        client = GuardedIMAPClient(
            "imap.guard.test",
            policy=policy,
            plaintext=False,
            port=s.port,
            ssl=True,
            ssl_context=client_context,
            timeout=5,
        )
        assert client.socket().getpeername()[0] == "127.0.0.1"
        assert b"IMAP4REV1" in client.capabilities()
        client.logout()
        assert s.sni == ["imap.guard.test"]
        assert resolver.calls == ["imap.guard.test"]

        resolver.sequence = [("127.0.0.1",)]
        with pytest.raises(ssl.SSLCertVerificationError):
            GuardedIMAPClient(
                "other.guard.test",
                policy=policy,
                plaintext=False,
                port=s.port,
                ssl=True,
                ssl_context=client_context,
                timeout=5,
            )
