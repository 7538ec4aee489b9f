"""A real HTTP(S) receiver in the test process: http.server in a thread, recording each POST,
answering as told (a status, after a delay)."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    host: str
    server: ThreadingHTTPServer
    scheme: str
    statuses: list[int] = field(default_factory=list)  # answers in turn, then `status`
    status: int = 200
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.server.server_address[1]}/hook"

    def answer(self) -> int:
        return self.statuses.pop(0) if self.statuses else self.status

    def events(self) -> list[dict]:
        return [r.json for r in self.received]

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.received


def _handler(receiver_box: list[Receiver]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            receiver = receiver_box[0]
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if receiver.delay:
                time.sleep(receiver.delay)
            status = receiver.answer()
            receiver.received.append(Received(self.path, dict(self.headers.items()), body))
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    return Handler


def start_receiver(host: str, *, tls: tuple[Path, Path] | None = None) -> Receiver:
    box: list[Receiver] = []
    server = ThreadingHTTPServer((host, 0), _handler(box))
    server.daemon_threads = True
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certfile=tls[1], keyfile=tls[0])
        server.socket = context.wrap_socket(server.socket, server_side=True)
    receiver = Receiver(host=host, server=server, scheme="https" if tls else "http")
    box.append(receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return receiver


def receiving(host: str, tls: tuple[Path, Path] | None = None) -> Iterator[Receiver]:
    receiver = start_receiver(host, tls=tls)
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
