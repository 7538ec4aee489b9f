"""The local Gmail API (tests/gmail_fake) in a process of its own for the benchmarks, so that
its CPU is not taken from the bench's (the GIL), driven through a pipe: seed mail, make
changes, read what it was asked."""

from __future__ import annotations

import multiprocessing
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

# User labels the bench mailbox has; a message gets one in five times.
USER_LABELS = ("Projects", "Projects/Alpha", "Receipts", "Travel")


@dataclass
class FakeInfo:
    base_url: str
    batch_uri: str
    token_uri: str
    ca_certs: str | None
    client_id: str
    client_secret: str


def _serve(conn: Any, host: str) -> None:
    from tests.gmail_fake import batch
    from tests.gmail_fake.server import GmailFake

    fake = GmailFake(host)
    fake.batch_counts = Counter()
    handle = batch.handle

    def counting(content_type, body, outer, call):
        def part(*args):
            fake.batch_counts["parts"] += 1
            return call(*args)

        fake.batch_counts["batches"] += 1
        return handle(content_type, body, outer, part)

    batch.handle = counting  # HTTP requests = calls - batch parts + batches
    users: dict[str, Any] = {}
    conn.send(
        FakeInfo(
            fake.base_url,
            fake.batch_uri,
            fake.token_uri,
            fake.ca_certs,
            fake.client_id,
            fake.client_secret,
        )
    )
    while True:
        command, args = conn.recv()
        try:
            if command == "stop":
                conn.send(None)
                break
            conn.send(_COMMANDS[command](fake, users, *args))
        except Exception as exc:  # the bench shows it; the server stays up
            conn.send(exc)
    fake.close()


def _add_user(fake, users, email: str) -> str:
    mailbox, refresh_token = fake.add_user(email)
    users[email] = mailbox
    for name in USER_LABELS:
        mailbox.add_label(name)
    return refresh_token


def _seed(fake, users, email: str, raws: Sequence[bytes], first_ts_ms: int) -> int:
    mailbox = users[email]
    rng = random.Random(email)
    user_labels = [lbl.id for lbl in mailbox.labels.values() if lbl.type == "user"]
    for i, raw in enumerate(raws):
        labels = ["INBOX"] if rng.random() < 0.7 else ["SENT"] if rng.random() < 0.5 else []
        if rng.random() < 0.3:
            labels.append("UNREAD")
        if rng.random() < 0.2:
            labels.append(rng.choice(user_labels))
        if rng.random() < 0.05:
            labels.append("STARRED")
        mailbox.add_message(raw, labels, internal_date=first_ts_ms + i * 60_000)
    return len(mailbox.messages)


def _changes(fake, users, email: str, raws: Sequence[bytes], modified: int, deleted: int) -> int:
    """len(RAWS) new messages, MODIFIED label changes and DELETED deletions of old ones."""
    mailbox = users[email]
    rng = random.Random(f"{email}-changes-{len(mailbox.history)}")
    old = sorted(mailbox.messages)
    for raw in raws:
        mailbox.add_message(raw, ["INBOX", "UNREAD"])
    for message_id in rng.sample(old, modified):
        if "UNREAD" in mailbox.messages[message_id].label_ids:
            mailbox.modify(message_id, remove=["UNREAD"])
        else:
            mailbox.modify(message_id, add=["STARRED"])
    for message_id in rng.sample([m for m in old if m in mailbox.messages], deleted):
        mailbox.delete(message_id)
    return len(raws) + modified + deleted


def _calls(fake, users) -> dict[str, int]:
    """API calls by method (`GET messages/<id>` is messages.get) and HTTP requests."""
    methods: Counter = Counter()
    for call in fake.calls:
        verb, path = call.split(" ", 1)
        parts = path.split("/")
        name = parts[0] if len(parts) == 1 else f"{parts[0]}.{verb} {'/'.join(parts[2:]) or 'id'}"
        methods[name] += 1
    requests = len(fake.calls) - fake.batch_counts["parts"] + fake.batch_counts["batches"]
    return {"requests": requests, **methods}


def _reset_calls(fake, users) -> None:
    fake.calls.clear()
    fake.batch_counts.clear()


def _units(fake, users, email: str) -> int:
    return fake.quota.used[email]


def _message_count(fake, users, email: str) -> int:
    return len(users[email].messages)


_COMMANDS: dict[str, Callable[..., Any]] = {
    "add_user": _add_user,
    "seed": _seed,
    "changes": _changes,
    "calls": _calls,
    "reset_calls": _reset_calls,
    "units": _units,
    "message_count": _message_count,
}


class FakeProcess:
    """Start with `with FakeProcess() as fake:`; `fake.ask(command, *args)`."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._proc = context.Process(target=_serve, args=(child, host), daemon=True)
        self.info: FakeInfo | None = None

    def __enter__(self) -> FakeProcess:
        self._proc.start()
        self.info = self._conn.recv()
        return self

    def __exit__(self, *exc: object) -> None:
        self.ask("stop")
        self._proc.join(timeout=10)
        if self._proc.is_alive():
            self._proc.kill()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def ask(self, command: str, *args: Any) -> Any:
        self._conn.send((command, args))
        answer = self._conn.recv()
        if isinstance(answer, Exception):
            raise answer
        return answer
