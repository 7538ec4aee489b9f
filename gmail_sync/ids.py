"""Gmail's ids in the store and in the API.

The API shows a message or thread id as hex (`"18c2f0a1b2c3d4e5"`); the store keeps the number
in decimal behind a `gm:` prefix (`"gm:1784…"`), the X-GM-MSGID / X-GM-THRID form Gmail's IMAP
shows, so a message synced over IMAP and over the API is one message.
"""

from __future__ import annotations

PREFIX = "gm:"


def store_id(api_id: str) -> str:
    """`"18c2f0a1b2c3d4e5"` -> `"gm:1784…"`; raises ValueError for an id that is not hex."""
    return f"{PREFIX}{int(api_id, 16)}"


def api_id(stored_id: str) -> str:
    """`"gm:1784…"` -> `"18c2f0a1b2c3d4e5"`; raises ValueError for an id not in the `gm:`
    decimal form."""
    if not stored_id.startswith(PREFIX) or not stored_id[len(PREFIX) :].isdigit():
        raise ValueError(f"not a stored Gmail id: {stored_id!r}")
    return format(int(stored_id[len(PREFIX) :]), "x")
