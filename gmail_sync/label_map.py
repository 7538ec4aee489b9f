"""A Gmail message's labelIds as the store keeps them: each label a folder (named by the
label id), except UNREAD, which is the read flag; STARRED is a folder and the flagged flag."""

from __future__ import annotations

from collections.abc import Iterable

FLAG_LABELS = {"STARRED": "\\Flagged", "DRAFT": "\\Draft"}
NOT_FOLDERS = frozenset({"UNREAD"})


def folders_of(label_ids: Iterable[str]) -> list[str]:
    return sorted({label for label in label_ids if label not in NOT_FOLDERS})


def flags_of(label_ids: Iterable[str]) -> list[str]:
    """IMAP-style flags, as the store's ingestion takes them (messages.ingest.flag_values)."""
    labels = set(label_ids)
    flags = [] if "UNREAD" in labels else ["\\Seen"]
    return flags + [flag for label, flag in FLAG_LABELS.items() if label in labels]
