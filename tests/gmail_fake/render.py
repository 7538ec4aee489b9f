"""A stored message as users.messages.get shows it, in each `format`."""

from __future__ import annotations

import base64
import email
import email.policy
import html
from email.message import Message as MimePart

from tests.gmail_fake.errors import bad_request, not_found
from tests.gmail_fake.mailbox import Message

SNIPPET_LENGTH = 200


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


def _parse(raw: bytes) -> MimePart:
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def _headers(part: MimePart, wanted: list[str] | None = None) -> list[dict]:
    keep = {name.casefold() for name in wanted} if wanted else None
    return [
        {"name": name, "value": str(value)}
        for name, value in part.items()
        if keep is None or name.casefold() in keep
    ]


def _text(part: MimePart) -> str | None:
    payload = part.get_payload(decode=True) or b""
    return payload.decode(part.get_content_charset() or "utf-8", errors="replace")


def snippet(raw: bytes) -> str:
    """The start of the first text part, whitespace collapsed, HTML-escaped as Gmail does."""
    for part in _parse(raw).walk():
        if part.get_content_type() == "text/plain" and not part.get_filename():
            words = " ".join((_text(part) or "").split())
            return html.escape(words[:SNIPPET_LENGTH]).replace("&#x27;", "&#39;")
    return ""


def _part(part: MimePart, part_id: str, message_id: str) -> dict:
    out = {
        "partId": part_id,
        "mimeType": part.get_content_type(),
        "filename": part.get_filename() or "",
        "headers": _headers(part),
    }
    if part.is_multipart():
        out["body"] = {"size": 0}
        prefix = f"{part_id}." if part_id else ""
        out["parts"] = [
            _part(child, f"{prefix}{i}", message_id) for i, child in enumerate(part.get_payload())
        ]
        return out
    data = part.get_payload(decode=True) or b""
    if out["filename"]:
        out["body"] = {"attachmentId": f"att-{message_id}-{part_id or 'root'}", "size": len(data)}
    else:
        out["body"] = {"size": len(data), "data": b64url(data)} if data else {"size": 0}
    return out


def attachment(message: Message, attachment_id: str) -> dict:
    prefix = f"att-{message.id}-"
    if not attachment_id.startswith(prefix):
        raise not_found()
    part_id = attachment_id.removeprefix(prefix)
    part = _parse(message.raw)
    if part_id != "root":
        for index in part_id.split("."):
            children = part.get_payload() if part.is_multipart() else []
            if not index.isdigit() or int(index) >= len(children):
                raise not_found()
            part = children[int(index)]
    data = part.get_payload(decode=True) or b""
    return {"attachmentId": attachment_id, "size": len(data), "data": b64url(data)}


def render(message: Message, fmt: str = "full", metadata_headers: list[str] | None = None) -> dict:
    out = {
        "id": message.id,
        "threadId": message.thread_id,
        "labelIds": list(message.label_ids),
        "snippet": snippet(message.raw),
        "sizeEstimate": len(message.raw),
        "historyId": str(message.history_id),
        "internalDate": str(message.internal_date),
    }
    if fmt == "minimal":
        return out
    if fmt == "raw":
        return {**out, "raw": b64url(message.raw)}
    root = _parse(message.raw)
    if fmt == "metadata":
        payload = {
            "partId": "",
            "mimeType": root.get_content_type(),
            "filename": "",
            "headers": _headers(root, metadata_headers),
            "body": {"size": 0},
        }
        return {**out, "payload": payload}
    if fmt == "full":
        return {**out, "payload": _part(root, "", message.id)}
    raise bad_request(f"Invalid value at 'format' ({fmt})")
