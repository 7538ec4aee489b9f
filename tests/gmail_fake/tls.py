"""A self-signed certificate for the fake, so that clients speak HTTPS to it as to Google.

google-api-python-client keeps the discovery document's https scheme for media uploads
whatever `api_endpoint` says, so an http-only fake could not take `/upload/` calls.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def self_signed(
    key: Any, common_name: str, extensions: Sequence[tuple[x509.ExtensionType, bool]] = ()
) -> x509.Certificate:
    """A certificate of KEY signed by itself, valid from five minutes ago for two days."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(key, hashes.SHA256())


def private_pem(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_certificate(directory: Path, host: str) -> tuple[Path, Path]:
    """A key and a certificate valid for `host` (and localhost); the certificate is also
    the CA bundle a client trusts."""
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    try:
        alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        alt_names.append(x509.DNSName(host))
    certificate = self_signed(
        key,
        "gmail-fake",
        [
            (x509.SubjectAlternativeName(alt_names), False),
            (x509.BasicConstraints(ca=True, path_length=None), True),
        ],
    )
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    key_path.write_bytes(private_pem(key))
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def server_context(key_path: Path, cert_path: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context
