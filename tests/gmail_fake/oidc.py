"""The OIDC tokens Pub/Sub puts on authenticated pushes, signed with a test RSA key.

Pub/Sub signs a JWT as the subscription's service account (iss https://accounts.google.com,
aud = the subscription's audience, email, email_verified) and sends it as
`Authorization: Bearer`; receivers verify it against Google's certificates, which the fake
serves at `/oauth2/v1/certs` in the same `{key id: PEM certificate}` shape.
"""

from __future__ import annotations

import secrets
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import crypt, jwt

from tests.gmail_fake.tls import private_pem, self_signed

ISSUER = "https://accounts.google.com"
LIFETIME = 3600


class TokenSigner:
    """A signing key and its certificate; KEY_ID: claim another key's id (a forgery)."""

    def __init__(self, key_id: str | None = None) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.key_id = key_id or secrets.token_hex(20)
        certificate = self_signed(key, "gmail-fake-oidc")
        self._certificate = certificate.public_bytes(serialization.Encoding.PEM).decode()
        pem = private_pem(key)
        self._signer = crypt.RSASigner.from_string(pem, self.key_id)

    def certs(self) -> dict[str, str]:
        return {self.key_id: self._certificate}

    def token(self, audience: str, email: str, **overrides: object) -> str:
        """A push's token; OVERRIDES replace (or, as None, remove) claims."""
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": audience,
            "azp": "1" + secrets.token_hex(10),
            "sub": "1" + secrets.token_hex(10),
            "email": email,
            "email_verified": True,
            "iat": now,
            "exp": now + LIFETIME,
        }
        claims.update(overrides)
        claims = {name: value for name, value in claims.items() if value is not None}
        return jwt.encode(self._signer, claims).decode()
