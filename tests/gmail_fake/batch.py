"""Batch requests: many API calls in one `multipart/mixed` POST, answered in kind.

Each part is an `application/http` request; its answer carries the part's Content-ID as
`<response-...>`. A batch holds at most 100 calls, and each call counts (quota, injected
faults) as if made alone.
"""

from __future__ import annotations

import email.parser
import email.policy
import re
import secrets
from collections.abc import Callable
from http import HTTPStatus

MAX_PARTS = 100
_SPLIT = re.compile(rb"\r?\n\r?\n")

Call = Callable[[str, str, dict[str, str], bytes], tuple[int, bytes]]


class BatchError(Exception):
    pass


def _parse_part(payload: bytes) -> tuple[str, str, dict[str, str], bytes]:
    match = _SPLIT.search(payload)
    head, body = (payload[: match.start()], payload[match.end() :]) if match else (payload, b"")
    lines = head.decode("latin-1").splitlines()
    method, target = lines[0].split(" ")[:2]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return method, target, headers, body


def handle(content_type: str, body: bytes, outer: dict[str, str], call: Call) -> tuple[str, bytes]:
    """Run each part through `call`; return the response's content type and body."""
    parsed = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    if not parsed.is_multipart():
        raise BatchError("Batch body must be multipart/mixed")
    parts = parsed.get_payload()
    if len(parts) > MAX_PARTS:
        raise BatchError(f"Too many requests in batch: {len(parts)} > {MAX_PARTS}")
    boundary = "batch_" + secrets.token_hex(12)
    out = []
    for part in parts:
        content_id = (part.get("Content-ID") or "").strip()
        payload = part.get_payload(decode=True) or b""
        method, target, headers, request_body = _parse_part(payload.lstrip(b"\r\n"))
        status, response = call(method, target, {**outer, **headers}, request_body)
        answer_id = f"<response-{content_id[1:]}" if content_id.startswith("<") else ""
        out.append(
            f"--{boundary}\r\nContent-Type: application/http\r\n"
            + (f"Content-ID: {answer_id}\r\n" if answer_id else "")
            + f"\r\nHTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            + "Content-Type: application/json; charset=UTF-8\r\n"
            + f"Content-Length: {len(response)}\r\n\r\n"
            + response.decode()
            + "\r\n"
        )
    out.append(f"--{boundary}--\r\n")
    return f"multipart/mixed; boundary={boundary}", "".join(out).encode()
