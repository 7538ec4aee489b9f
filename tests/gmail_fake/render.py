"""A stored message as users.messages.get shows it, in each `format`."""

from __future__ import annotations

import base64
import email
import email.policy
import html
from email.message import Message as MimePart
from html.parser import HTMLParser

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
    try:
        return payload.decode(part.get_content_charset() or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know (x-unknown, ...): as Gmail, go on
        return payload.decode("utf-8", errors="replace")


class _HtmlText(HTMLParser):
    """The text a reader sees in HTML: no tags, no <style>/<script>/<head> content."""

    HIDDEN = frozenset({"style", "script", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.words: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in self.HIDDEN:
            self._hidden += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN and self._hidden:
            self._hidden -= 1

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.words += data.split()


def _html_words(markup: str) -> str:
    parser = _HtmlText()
    parser.feed(markup)
    parser.close()
    return " ".join(parser.words)


def snippet(raw: bytes) -> str:
    """The start of the message's text, whitespace collapsed, HTML-escaped as Gmail does: the
    first text/plain part, else the text of the first text/html part."""
    parts = [p for p in _parse(raw).walk() if not p.is_multipart() and not p.get_filename()]
    plain = next((p for p in parts if p.get_content_type() == "text/plain"), None)
    if plain is not None:
        words = " ".join((_text(plain) or "").split())
    else:
        markup = next((p for p in parts if p.get_content_type() == "text/html"), None)
        words = _html_words(_text(markup) or "") if markup is not None else ""
    return html.escape(words[:SNIPPET_LENGTH]).replace("&#x27;", "&#39;")


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
