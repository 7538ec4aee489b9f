"""A server with RFC 8474 OBJECTID: the real Dovecot behind a proxy that speaks EMAILID.

Dovecot 2.3 has no OBJECTID; its X-GUID plays the part. The proxy advertises OBJECTID, asks
Dovecot for X-GUID where the client asks for EMAILID, and answers `EMAILID (M<hash>)`, an
objectid as RFC 8474 spells it, stable where the X-GUID is (moves, copies, UIDVALIDITY).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import socket
import socketserver
import threading

_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")
_X_GUID = re.compile(rb"X-GUID (\S+?)([ )])")


def email_id(x_guid: bytes) -> bytes:
    return b"M" + hashlib.sha256(x_guid).hexdigest()[:24].encode()


class ObjectIdImapFake:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                _relay(upstream, self.request)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _relay(upstream: tuple[str, int], client: socket.socket) -> None:
    server = socket.create_connection(upstream)
    to_client = threading.Thread(target=_pump, args=(server, client, _answer), daemon=True)
    to_client.start()
    try:
        _pump(client, server, _command)
    finally:
        for sock in (server, client):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        to_client.join(timeout=5)
        server.close()


def _command(line: bytes) -> bytes:
    return line.replace(b"EMAILID", b"X-GUID") if b" FETCH " in line.upper() else line


def _answer(line: bytes) -> bytes:
    line = line.replace(b"CAPABILITY IMAP4rev1", b"CAPABILITY IMAP4rev1 OBJECTID")
    if line.startswith(b"* ") and b" FETCH (" in line:
        line = _X_GUID.sub(lambda m: b"EMAILID (" + email_id(m.group(1)) + b")" + m.group(2), line)
    return line


def _pump(source: socket.socket, sink: socket.socket, rewrite) -> None:
    """Line by line, literals passed through untouched."""
    reader = source.makefile("rb")
    with contextlib.suppress(OSError):
        while line := reader.readline():
            sink.sendall(rewrite(line))
            literal = _LITERAL.search(line)
            if literal:
                sink.sendall(reader.read(int(literal.group(1))))
