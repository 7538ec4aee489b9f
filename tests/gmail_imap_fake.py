"""A local stand-in for Gmail's IMAP server: the real Dovecot, with Gmail's X-GM-EXT-1 on top.

Gmail cannot run here, so this proxy sits between the client and the test session's Dovecot
and speaks the part of Gmail's dialect the sync uses: it advertises X-GM-EXT-1, strips the
X-GM-MSGID / X-GM-THRID / X-GM-LABELS items from FETCH commands before Dovecot sees them, and
adds them to each FETCH response, with the values Gmail would give: one message id for the
same message in every folder (label), and a thread id. The test says which (folder, UID)
holds which message; everything else (folders, UIDs, flags, bodies, CONDSTORE) is Dovecot's.
"""

from __future__ import annotations

import contextlib
import re
import socket
import socketserver
import threading
from dataclasses import dataclass

_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")
_SELECT = re.compile(rb'^\S+ (?:SELECT|EXAMINE) (?:"((?:[^"\\]|\\.)*)"|(\S+))', re.IGNORECASE)
_GM_ITEM = re.compile(rb" ?X-GM-(?:MSGID|THRID|LABELS)\b")
_FETCH_RESPONSE = re.compile(rb"^\* \d+ FETCH \(")
_UID = re.compile(rb"\bUID (\d+)")


@dataclass(frozen=True)
class GmailMessage:
    msgid: int
    thrid: int
    labels: tuple[str, ...] = ()


class GmailImapFake:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.messages: dict[tuple[str, int], GmailMessage] = {}
        fake = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                _Session(fake, self.request).run()

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def place(self, folder: str, uid: int, message: GmailMessage) -> None:
        self.messages[(folder, uid)] = message

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Session:
    """One client connection and its Dovecot connection."""

    def __init__(self, fake: GmailImapFake, client: socket.socket) -> None:
        self.fake = fake
        self.client = client
        self.server = socket.create_connection(fake.upstream)
        self.folder = ""
        self.gm_fetch_tag = b""

    def run(self) -> None:
        to_client = threading.Thread(target=self._server_to_client, daemon=True)
        to_client.start()
        try:
            self._client_to_server()
        finally:
            for sock in (self.server, self.client):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            to_client.join(timeout=5)
            self.server.close()

    def _client_to_server(self) -> None:
        reader = self.client.makefile("rb")
        while line := reader.readline():
            selected = _SELECT.match(line)
            if selected:
                self.folder = (selected.group(1) or selected.group(2)).decode()
            if b" FETCH " in line.upper() and b"X-GM-" in line:
                line = _GM_ITEM.sub(b"", line).replace(b"( ", b"(")
                self.gm_fetch_tag = line.split(b" ", 1)[0] + b" "
            self.server.sendall(line)
            literal = _LITERAL.search(line)
            if literal:
                self.server.sendall(reader.read(int(literal.group(1))))

    def _server_to_client(self) -> None:
        reader = self.server.makefile("rb")
        continued = False  # the line goes on after a literal: not the start of a response
        while line := reader.readline():
            if not continued:
                line = line.replace(b"CAPABILITY IMAP4rev1", b"CAPABILITY IMAP4rev1 X-GM-EXT-1")
                if self.gm_fetch_tag and _FETCH_RESPONSE.match(line):
                    line = self._with_gmail_items(line)
                elif self.gm_fetch_tag and line.startswith(self.gm_fetch_tag):
                    self.gm_fetch_tag = b""  # the FETCH command is complete
            self.client.sendall(line)
            literal = _LITERAL.search(line)
            if literal:
                self.client.sendall(reader.read(int(literal.group(1))))
            continued = literal is not None

    def _with_gmail_items(self, line: bytes) -> bytes:
        uid = int(_UID.search(line).group(1))
        message = self.fake.messages.get((self.folder, uid)) or GmailMessage(
            msgid=hash((self.folder, uid)) & 0x7FFFFFFFFFFFFFFF, thrid=uid
        )
        labels = " ".join(f'"{label}"' for label in message.labels)
        items = f"X-GM-MSGID {message.msgid} X-GM-THRID {message.thrid} X-GM-LABELS ({labels}) "
        head = _FETCH_RESPONSE.match(line).group(0)
        return head + items.encode() + line[len(head) :]
