#!/usr/bin/env python3
"""An SMTP sink for the send benchmark, in a process of its own (so that it takes no CPU time
from the process it measures): aiosmtpd on a loopback port, AUTH PLAIN/LOGIN accepted for any
login without TLS, every message accepted and counted, nothing kept.

    python bench/smtp_sink_process.py   -> prints "PORT <n>", then serves until stdin closes;
    each line written to its stdin is answered with "COUNT <messages received>".
"""

from __future__ import annotations

import socket
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


class Sink:
    def __init__(self) -> None:
        self.received = 0

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd's)
        self.received += 1
        return "250 2.0.0 Ok: queued"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    sink = Sink()
    port = free_port()
    controller = Controller(
        sink,
        hostname="127.0.0.1",
        port=port,
        auth_require_tls=False,
        authenticator=lambda *args: AuthResult(success=True),
        data_size_limit=64 * 1024 * 1024,
    )
    controller.start()
    print(f"PORT {port}", flush=True)
    try:
        for _line in sys.stdin:
            print(f"COUNT {sink.received}", flush=True)
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
