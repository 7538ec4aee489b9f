"""One Gmail mailbox in memory: messages, labels, threads and the history of every change.

History ids grow with every change, with gaps (as Gmail's do); each message carries the id of
the last change that touched it. Message ids are Gmail's: 16 hex digits of a 64-bit number
that grows with the time the message reached the mailbox (the number Gmail's IMAP shows as
X-GM-MSGID), and a thread's id is the id of its first message.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.utils import parsedate_to_datetime

from tests.gmail_fake.errors import bad_request, not_found

SYSTEM_LABELS = (
    "INBOX",
    "SENT",
    "DRAFT",
    "TRASH",
    "SPAM",
    "STARRED",
    "IMPORTANT",
    "UNREAD",
    "CHAT",
    "CATEGORY_PERSONAL",
    "CATEGORY_SOCIAL",
    "CATEGORY_PROMOTIONS",
    "CATEGORY_UPDATES",
    "CATEGORY_FORUMS",
)
HISTORY_TYPES = ("messageAdded", "messageDeleted", "labelAdded", "labelRemoved")
_REPLY_PREFIX = re.compile(r"^\s*((re|fwd?|aw|sv|antw)\s*(\[\d+\])?\s*:\s*)+", re.IGNORECASE)
_MESSAGE_ID = re.compile(r"<[^<>\s]+>")


@dataclass
class Label:
    id: str
    name: str
    type: str


@dataclass
class Message:
    id: str
    thread_id: str
    raw: bytes
    label_ids: list[str]
    internal_date: int
    history_id: int
    # What trash took away and untrash gives back (INBOX, if the message was there).
    before_trash: list[str] = field(default_factory=list)

    def ref(self) -> dict:
        return {"id": self.id, "threadId": self.thread_id}

    def summary(self) -> dict:
        return {**self.ref(), "labelIds": list(self.label_ids)}


@dataclass
class Change:
    """One history record: what happened to one message at one history id."""

    history_id: int
    type: str
    message: dict
    label_ids: list[str] = field(default_factory=list)

    def touches(self) -> set[str]:
        return set(self.message["labelIds"]) | set(self.label_ids)


@dataclass
class Watch:
    topic_name: str
    label_ids: list[str]
    behavior: str
    expiration: int

    def wants(self, labels: set[str]) -> bool:
        if not self.label_ids:
            return True
        hit = bool(labels & set(self.label_ids))
        return hit if self.behavior == "include" else not hit


def _subject_key(subject: object) -> str:
    # A header with undecodable bytes comes back as an email.header.Header: str() it.
    return " ".join(_REPLY_PREFIX.sub("", str(subject or "")).split()).casefold()


def _header_ids(value: object) -> list[str]:
    return _MESSAGE_ID.findall(str(value or ""))


class Mailbox:
    def __init__(self, email: str, on_change: Callable[[Mailbox, set[str]], None]) -> None:
        self.email = email
        self.lock = threading.RLock()
        self.messages: dict[str, Message] = {}
        self.labels: dict[str, Label] = {n: Label(n, n, "system") for n in SYSTEM_LABELS}
        self.history: list[Change] = []
        self._rng = random.Random(email)
        self.history_id = self._rng.randint(1000, 100_000)
        self.history_floor = self.history_id
        self.watch: Watch | None = None
        self._on_change = on_change
        self._by_message_id: dict[str, set[str]] = {}
        self._last_id = 0
        self._user_labels = 0

    # Labels

    def add_label(self, name: str) -> Label:
        with self.lock:
            if any(label.name.casefold() == name.casefold() for label in self.labels.values()):
                raise bad_request("Label name exists or conflicts")
            self._user_labels += 1
            label = Label(f"Label_{self._user_labels}", name, "user")
            self.labels[label.id] = label
            return label

    def label(self, label_id: str) -> Label:
        label = self.labels.get(label_id)
        if label is None:
            raise not_found()
        return label

    def _check_labels(self, label_ids: Iterable[str]) -> None:
        for label_id in label_ids:
            if label_id not in self.labels:
                raise bad_request(f"Invalid label: {label_id}")

    # Messages

    def get(self, message_id: str) -> Message:
        message = self.messages.get(message_id)
        if message is None:
            raise not_found()
        return message

    def _new_id(self) -> str:
        number = max(self._last_id + 1, int(time.time() * 1000) << 20)
        self._last_id = number
        return f"{number:016x}"

    def _next_history_id(self) -> int:
        self.history_id += self._rng.randint(1, 4)
        return self.history_id

    def _record(self, change_type: str, message: Message, label_ids: Iterable[str] = ()) -> None:
        message.history_id = self._next_history_id()
        change = Change(message.history_id, change_type, message.summary(), list(label_ids))
        self.history.append(change)
        self._on_change(self, change.touches())

    def _thread_for(self, headers, requested: str | None) -> str | None:
        """Gmail threads a message with one it answers (In-Reply-To / References) whose
        subject matches once Re:/Fwd: are removed; a requested threadId must meet the same
        rules, or the message starts a thread of its own."""
        refs = _header_ids(headers.get("In-Reply-To")) + _header_ids(headers.get("References"))
        subject = _subject_key(headers.get("Subject"))
        threads = [
            self.messages[gid].thread_id
            for ref in reversed(refs)
            for gid in self._by_message_id.get(ref, ())
            if _subject_key(self._subject(self.messages[gid])) == subject
        ]
        if requested is not None:
            return requested if requested in threads else None
        return threads[0] if threads else None

    @staticmethod
    def _subject(message: Message) -> str | None:
        return BytesHeaderParser().parsebytes(message.raw).get("Subject")

    def add_message(
        self,
        raw: bytes,
        label_ids: Iterable[str] = ("INBOX", "UNREAD"),
        *,
        internal_date: int | None = None,
        thread_id: str | None = None,
        date_from_header: bool = False,
    ) -> Message:
        """messages.insert / import / send, and a test's setup: a new message, recorded as
        messageAdded."""
        label_ids = list(dict.fromkeys(label_ids))
        headers = BytesHeaderParser().parsebytes(raw)
        with self.lock:
            self._check_labels(label_ids)
            if internal_date is None:
                internal_date = _header_date(headers) if date_from_header else None
            if internal_date is None:
                internal_date = int(time.time() * 1000)
            gid = self._new_id()
            message = Message(
                id=gid,
                thread_id=self._thread_for(headers, thread_id) or gid,
                raw=raw,
                label_ids=label_ids,
                internal_date=internal_date,
                history_id=0,
            )
            self.messages[gid] = message
            for ref in _header_ids(headers.get("Message-ID")):
                self._by_message_id.setdefault(ref, set()).add(gid)
            self._record("messageAdded", message)
            return message

    def ids_by_message_id(self, message_id: str) -> set[str]:
        """The messages whose Message-ID field is MESSAGE_ID (with its angle brackets)."""
        with self.lock:
            return {g for g in self._by_message_id.get(message_id, ()) if g in self.messages}

    def modify(
        self, message_id: str, add: Iterable[str] = (), remove: Iterable[str] = ()
    ) -> Message:
        add, remove = list(add), list(remove)
        with self.lock:
            message = self.get(message_id)
            self._check_labels(add + remove)
            added = [x for x in dict.fromkeys(add) if x not in message.label_ids]
            removed = [x for x in dict.fromkeys(remove) if x in message.label_ids and x not in add]
            if not added and not removed:
                return message
            message.label_ids = [x for x in message.label_ids if x not in removed] + added
            if added:
                self._record("labelAdded", message, added)
            if removed:
                self._record("labelRemoved", message, removed)
            return message

    def trash(self, message_id: str) -> Message:
        with self.lock:
            message = self.get(message_id)
            if "TRASH" not in message.label_ids:
                message.before_trash = [x for x in ("INBOX",) if x in message.label_ids]
            return self.modify(message_id, add=["TRASH"], remove=["INBOX", "SPAM"])

    def untrash(self, message_id: str) -> Message:
        """Out of the trash, and back in the inbox if trash took it from there."""
        with self.lock:
            message = self.get(message_id)
            if "TRASH" not in message.label_ids:
                return message
            restore, message.before_trash = message.before_trash, []
            return self.modify(message_id, add=restore, remove=["TRASH"])

    def delete(self, message_id: str) -> None:
        with self.lock:
            message = self.get(message_id)
            del self.messages[message_id]
            for ids in self._by_message_id.values():
                ids.discard(message_id)
            self._record("messageDeleted", message)

    # History

    def expire_history(self) -> None:
        """Forget every record so far: a startHistoryId older than now answers 404."""
        with self.lock:
            self.history.clear()
            self.history_floor = self.history_id

    def changes_since(self, start: int) -> list[Change]:
        with self.lock:
            if start < self.history_floor:
                raise not_found()
            return [c for c in self.history if c.history_id > start]

    # Counts

    def counts(self, label_id: str) -> dict:
        with self.lock:
            tagged = [m for m in self.messages.values() if label_id in m.label_ids]
            unread = [m for m in tagged if "UNREAD" in m.label_ids]
            return {
                "messagesTotal": len(tagged),
                "messagesUnread": len(unread),
                "threadsTotal": len({m.thread_id for m in tagged}),
                "threadsUnread": len({m.thread_id for m in unread}),
            }


def _header_date(headers) -> int | None:
    try:
        return int(parsedate_to_datetime(headers.get("Date", "")).timestamp() * 1000)
    except (TypeError, ValueError, IndexError):
        return None
