"""The Gmail v1 REST methods, each answering `(status, json body or None)`.

Paths and parameters are those of the discovery document google-api-python-client bundles;
each method's behaviour follows Google's reference pages (see README in this package).
"""

from __future__ import annotations

import base64
import binascii
import email.policy
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate, make_msgid

from tests.gmail_fake import render
from tests.gmail_fake.errors import ApiError, bad_request, not_implemented
from tests.gmail_fake.mailbox import HISTORY_TYPES, Change, Mailbox, Watch
from tests.gmail_fake.upload import message_input

WATCH_LIFETIME_MS = 7 * 24 * 3600 * 1000
DEFAULT_PAGE, MAX_PAGE = 100, 500


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    mailbox: Mailbox
    # Topics Gmail may not publish to (gmail-api-push lacks the Publisher role on them).
    publish_denied: frozenset[str] = frozenset()

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def params(self, name: str) -> list[str]:
        return [v for value in self.query.get(name, []) for v in value.split(",") if v]

    def flag(self, name: str) -> bool:
        return (self.param(name) or "false").lower() == "true"

    def page_size(self) -> int:
        try:
            size = int(self.param("maxResults") or DEFAULT_PAGE)
        except ValueError as error:
            raise bad_request("Invalid value for maxResults") from error
        return min(max(size, 1), MAX_PAGE)

    def json(self) -> dict:
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except ValueError as error:
            raise bad_request("Invalid JSON payload received.") from error


Params = dict[str, str]  # the path's parameters, by the discovery document's names
Handler = Callable[[Request, Params], tuple[int, dict | None]]


@dataclass(frozen=True)
class Route:
    method_id: str
    handler: Handler
    units: int


ROUTES: dict[str, Route] = {}


def route(method_id: str, *, units: int) -> Callable[[Handler], Handler]:
    """Implement a method of the discovery document (by its id); `units` is its cost in
    Gmail's published per-method quota table."""

    def register(handler: Handler) -> Handler:
        ROUTES[method_id] = Route(method_id, handler, units)
        return handler

    return register


_GMAIL_ID = re.compile(r"[0-9a-f]{1,16}")


def message_id(value: str) -> str:
    """A message id as Gmail takes it: hex; anything else is 400 "Invalid id value"."""
    if not _GMAIL_ID.fullmatch(value):
        raise bad_request("Invalid id value")
    return value


def _summary(message) -> dict:
    return {"id": message.id, "threadId": message.thread_id, "labelIds": list(message.label_ids)}


@route("gmail.users.getProfile", units=1)
def get_profile(req: Request, m: Params) -> tuple[int, dict]:
    box = req.mailbox
    with box.lock:
        return 200, {
            "emailAddress": box.email,
            "messagesTotal": len(box.messages),
            "threadsTotal": len({x.thread_id for x in box.messages.values()}),
            "historyId": str(box.history_id),
        }


def _label(label, counts: dict | None = None) -> dict:
    out = {"id": label.id, "name": label.name, "type": label.type}
    if label.type == "user":
        out |= {"messageListVisibility": "show", "labelListVisibility": "labelShow"}
    return out | (counts or {})


@route("gmail.users.labels.list", units=1)
def labels_list(req: Request, m: Params) -> tuple[int, dict]:
    return 200, {"labels": [_label(x) for x in list(req.mailbox.labels.values())]}


@route("gmail.users.labels.get", units=1)
def labels_get(req: Request, m: Params) -> tuple[int, dict]:
    label = req.mailbox.label(m["id"])
    return 200, _label(label, req.mailbox.counts(label.id))


@route("gmail.users.labels.create", units=5)
def labels_create(req: Request, m: Params) -> tuple[int, dict]:
    name = req.json().get("name")
    if not name:
        raise bad_request("Invalid label name")
    return 200, _label(req.mailbox.add_label(name))


def _sort_key(message) -> tuple[int, str]:
    return (message.internal_date, message.id)


def _encode_token(key: tuple[int, str]) -> str:
    return base64.urlsafe_b64encode(f"{key[0]}:{key[1]}".encode()).decode()


def _decode_token(token: str) -> tuple[int, str]:
    try:
        date, gid = base64.urlsafe_b64decode(token).decode().split(":")
        return int(date), gid
    except (ValueError, binascii.Error) as error:
        raise bad_request("Invalid pageToken") from error


def _rfc822msgid_query(q: str | None) -> str | None:
    """The Message-ID of a `q` that is one `rfc822msgid:` term (Gmail's search operator for
    "messages with a specified message-id header", e.g. rfc822msgid:200503292@example.com;
    angle brackets optional); None without q. Other searches are not implemented (400)."""
    if not q:
        return None
    term = q.strip()
    if term.lower().startswith("rfc822msgid:") and " " not in term:
        value = term.split(":", 1)[1].strip().strip("<>")
        if value:
            return f"<{value}>"
    raise bad_request("The fake implements only rfc822msgid: search queries (q)")


@route("gmail.users.messages.list", units=5)
def messages_list(req: Request, m: Params) -> tuple[int, dict]:
    by_id = _rfc822msgid_query(req.param("q"))
    wanted = set(req.params("labelIds"))
    hidden = (
        set() if req.flag("includeSpamTrash") or wanted & {"SPAM", "TRASH"} else {"SPAM", "TRASH"}
    )
    with req.mailbox.lock:
        matches = sorted(
            (
                x
                for x in req.mailbox.messages.values()
                if wanted <= set(x.label_ids)
                and not hidden & set(x.label_ids)
                and (by_id is None or x.id in req.mailbox.ids_by_message_id(by_id))
            ),
            key=_sort_key,
            reverse=True,
        )
    token = req.param("pageToken")
    if token:
        after = _decode_token(token)
        matches_after = [x for x in matches if _sort_key(x) < after]
    else:
        matches_after = matches
    size = req.page_size()
    page = matches_after[:size]
    out: dict = {"resultSizeEstimate": len(matches)}
    if page:
        out["messages"] = [x.ref() for x in page]
    if len(matches_after) > size:
        out["nextPageToken"] = _encode_token(_sort_key(page[-1]))
    return 200, out


@route("gmail.users.messages.get", units=5)
def messages_get(req: Request, m: Params) -> tuple[int, dict]:
    message = req.mailbox.get(message_id(m["id"]))
    fmt = req.param("format", "full")
    return 200, render.render(message, fmt, req.params("metadataHeaders") or None)


@route("gmail.users.messages.attachments.get", units=5)
def attachments_get(req: Request, m: Params) -> tuple[int, dict]:
    return 200, render.attachment(req.mailbox.get(message_id(m["messageId"])), m["id"])


def _insert(req: Request, default_source: str) -> tuple[int, dict]:
    resource, raw = message_input(req)
    source = req.param("internalDateSource", default_source)
    message = req.mailbox.add_message(
        raw,
        resource.get("labelIds", []),
        thread_id=resource.get("threadId"),
        date_from_header=source == "dateHeader",
    )
    return 200, _summary(message)


@route("gmail.users.messages.insert", units=25)
def messages_insert(req: Request, m: Params) -> tuple[int, dict]:
    return _insert(req, "receivedTime")


@route("gmail.users.messages.import", units=25)
def messages_import(req: Request, m: Params) -> tuple[int, dict]:
    return _insert(req, "dateHeader")


@route("gmail.users.messages.send", units=100)
def messages_send(req: Request, m: Params) -> tuple[int, dict]:
    resource, raw = message_input(req)
    parsed = email.message_from_bytes(raw, policy=email.policy.compat32)
    if not any(parsed.get(h) for h in ("To", "Cc", "Bcc")):
        raise bad_request("Recipient address required")
    if not parsed.get("From"):
        parsed["From"] = req.mailbox.email
    if not parsed.get("Date"):
        parsed["Date"] = formatdate(localtime=False, usegmt=True)
    if not parsed.get("Message-ID"):
        parsed["Message-ID"] = make_msgid(domain="mail.gmail.com")
    del parsed["Bcc"]
    message = req.mailbox.add_message(
        parsed.as_bytes(), ["SENT"], thread_id=resource.get("threadId")
    )
    return 200, _summary(message)


@route("gmail.users.messages.modify", units=5)
def messages_modify(req: Request, m: Params) -> tuple[int, dict]:
    body = req.json()
    message = req.mailbox.modify(
        message_id(m["id"]), body.get("addLabelIds", []), body.get("removeLabelIds", [])
    )
    return 200, _summary(message)


@route("gmail.users.messages.batchModify", units=50)
def messages_batch_modify(req: Request, m: Params) -> tuple[int, None]:
    body = req.json()
    with req.mailbox.lock:
        for gid in [message_id(x) for x in body.get("ids", [])]:
            if gid in req.mailbox.messages:
                req.mailbox.modify(gid, body.get("addLabelIds", []), body.get("removeLabelIds", []))
    return 204, None


@route("gmail.users.messages.trash", units=5)
def messages_trash(req: Request, m: Params) -> tuple[int, dict]:
    return 200, _summary(req.mailbox.trash(message_id(m["id"])))


@route("gmail.users.messages.untrash", units=5)
def messages_untrash(req: Request, m: Params) -> tuple[int, dict]:
    return 200, _summary(req.mailbox.untrash(message_id(m["id"])))


@route("gmail.users.messages.delete", units=10)
def messages_delete(req: Request, m: Params) -> tuple[int, None]:
    req.mailbox.delete(message_id(m["id"]))
    return 204, None


_RECORD_FIELD = {
    "messageAdded": "messagesAdded",
    "messageDeleted": "messagesDeleted",
    "labelAdded": "labelsAdded",
    "labelRemoved": "labelsRemoved",
}


def _record(change: Change) -> dict:
    entry: dict = {"message": change.message}
    if change.type in ("labelAdded", "labelRemoved"):
        entry["labelIds"] = change.label_ids
    ref = {"id": change.message["id"], "threadId": change.message["threadId"]}
    return {"id": str(change.history_id), "messages": [ref], _RECORD_FIELD[change.type]: [entry]}


@route("gmail.users.history.list", units=2)
def history_list(req: Request, m: Params) -> tuple[int, dict]:
    start = req.param("startHistoryId")
    if not start or not start.isdigit():
        raise bad_request("Invalid startHistoryId")
    types = req.params("historyTypes")
    if any(t not in HISTORY_TYPES for t in types):
        raise bad_request("Invalid historyTypes")
    label_id = req.param("labelId")
    token = req.param("pageToken")
    after = int(start)
    if token:
        if not token.isdigit():
            raise bad_request("Invalid pageToken")
        after = max(after, int(token))
    with req.mailbox.lock:  # the records and the historyId they lead up to, from one moment
        changes = req.mailbox.changes_since(int(start))
        current = req.mailbox.history_id
    matching = [
        c
        for c in changes
        if c.history_id > after
        and (not types or c.type in types)
        and (label_id is None or label_id in c.touches())
    ]
    size = req.page_size()
    out: dict = {"historyId": str(current)}
    if matching[:size]:
        out["history"] = [_record(c) for c in matching[:size]]
    if len(matching) > size:
        out["nextPageToken"] = str(matching[size - 1].history_id)
    return 200, out


@route("gmail.users.watch", units=100)
def watch(req: Request, m: Params) -> tuple[int, dict]:
    body = req.json()
    topic = body.get("topicName")
    if not topic or not re.fullmatch(r"projects/[^/]+/topics/[^/]+", topic):
        raise bad_request("Invalid topicName does not match projects/*/topics/*")
    if topic in req.publish_denied:  # Gmail publishes a test message first
        raise ApiError(
            403,
            f"Error sending test message to Cloud PubSub {topic} : "
            "User not authorized to perform this action.",
            "forbidden",
        )
    behavior = (
        body.get("labelFilterBehavior") or body.get("labelFilterAction") or "include"
    ).lower()
    box = req.mailbox
    with box.lock:
        box.watch = Watch(
            topic_name=topic,
            label_ids=body.get("labelIds", []),
            behavior=behavior,
            expiration=int(time.time() * 1000) + WATCH_LIFETIME_MS,
        )
        return 200, {"historyId": str(box.history_id), "expiration": str(box.watch.expiration)}


@route("gmail.users.stop", units=50)
def stop(req: Request, m: Params) -> tuple[int, None]:
    req.mailbox.watch = None
    return 204, None


def handler_of(method_id: str) -> Route:
    route_ = ROUTES.get(method_id)
    if route_ is None:
        raise not_implemented(method_id)
    return route_


__all__ = ["ApiError", "Request", "handler_of"]
