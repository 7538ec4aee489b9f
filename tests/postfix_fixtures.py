"""Fixtures for the private Postfix (`make test` starts it via scripts/devservices.py): SMTP on a
loopback port, delivery into the Dovecot users' INBOXes by LMTP, real RFC 3464 DSNs."""

from __future__ import annotations

import os
import smtplib
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.imap_fixtures import MailServerUser


@dataclass(frozen=True)
class PostfixServer:
    host: str
    port: int
    domain: str
    log: Path

    def address(self, user: MailServerUser) -> str:
        """USER's address: mail Postfix accepts for it lands in USER's Dovecot INBOX."""
        return f"{user.username}@{self.domain}"

    def smtp(self) -> smtplib.SMTP:
        return smtplib.SMTP(self.host, self.port, timeout=30)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return f"(no Postfix log at {self.log})"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def wait_for_message(
        self,
        user: MailServerUser,
        *,
        header: tuple[str, str] | None = None,
        body: str | None = None,
        timeout: float = 30.0,
    ) -> bytes:
        """The raw bytes of the first message in USER's INBOX whose HEADER (name, value) or body
        contains the given text (IMAP SEARCH), as soon as it is there; fails after TIMEOUT
        seconds with the end of Postfix's log."""
        criteria: list[str] = []
        if header:
            criteria += ["HEADER", *header]
        if body:
            criteria += ["BODY", body]
        if not criteria:
            raise ValueError("wait_for_message needs a header or a body text")
        deadline = time.monotonic() + timeout
        pause = 0.02
        with user.client() as client:
            client.select_folder("INBOX", readonly=True)
            while True:
                uids = client.search(criteria)
                if uids:
                    return client.fetch(uids[:1], ["BODY.PEEK[]"])[uids[0]][b"BODY[]"]
                if time.monotonic() >= deadline:
                    pytest.fail(
                        f"no message matching {criteria} reached {user.username}'s INBOX within "
                        f"{timeout:.0f}s; Postfix's log ends with:\n{self.log_tail()}"
                    )
                time.sleep(pause)
                pause = min(pause * 2, 0.5)
                client.noop()


@pytest.fixture(scope="session")
def postfix(dovecot) -> PostfixServer:
    """The private Postfix of this test session (started once by scripts/devservices.py)."""
    host = os.environ.get("POSTFIX_SMTP_HOST")
    if not host:
        why = os.environ.get("POSTFIX_MISSING") or (
            "POSTFIX_SMTP_HOST is not set: run the suite with `make test`"
        )
        pytest.fail(f"this test needs the private Postfix, which is not running: {why}")
    return PostfixServer(
        host=host,
        port=int(os.environ["POSTFIX_SMTP_PORT"]),
        domain=os.environ["POSTFIX_MAIL_DOMAIN"],
        log=Path(os.environ["POSTFIX_LOG"]),
    )
