"""The message a users.messages insert/import/send call carries: a JSON `raw`
(base64url) or an upload to `/upload/...` (`uploadType=media` or `multipart`)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import TYPE_CHECKING

from tests.gmail_fake.errors import bad_request

if TYPE_CHECKING:
    from tests.gmail_fake.api import Request


def _b64decode(value: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as error:
        raise bad_request("Invalid value for ByteString") from error


def message_input(req: Request) -> tuple[dict, bytes]:
    """The Message resource and its raw bytes, from a JSON body or a media upload."""
    if "/upload/" not in req.path:
        resource = req.json()
        if not resource.get("raw"):
            raise bad_request(
                "'raw' RFC822 payload message string or uploading message via /upload/* "
                "URL required"
            )
        return resource, _b64decode(resource["raw"])
    upload = req.param("uploadType")
    if upload == "media":
        return {}, req.body
    if upload == "multipart":
        parts = _related_parts(req.headers.get("content-type", ""), req.body)
        if len(parts) != 2:
            raise bad_request("Multipart upload needs metadata and media")
        return json.loads(parts[0] or b"{}"), parts[1]
    raise bad_request(f"Upload type not supported by the fake: {upload}")


_BOUNDARY = re.compile(r'boundary="?([^";]+)"?')
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")


def _related_parts(content_type: str, body: bytes) -> list[bytes]:
    """The bodies of a multipart/related upload, byte for byte (the media part is binary)."""
    match = _BOUNDARY.search(content_type)
    if not match:
        raise bad_request("Multipart upload without a boundary")
    delimiter = b"--" + match[1].encode()
    bodies = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        blank = _BLANK_LINE.search(chunk)
        part = chunk[blank.end() :] if blank else b""
        bodies.append(part.removesuffix(b"\n").removesuffix(b"\r"))
    return bodies
