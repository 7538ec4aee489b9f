"""The outbox: compose, change a draft, attach and detach, send (now or at send_at), cancel,
delete.

Everything a client gives is checked before anything is stored or queued (messages.outbox_checks
for header values and addresses); a refusal is an OutboxRefused with a 4xx status, a stable code
and a readable message. The Message-ID (`<uuid@sender-domain>`) and the SMTP ENVID are fixed at
creation; the MIME bytes are built once, when the message is queued, so every attempt sends the
same bytes. States change only through messages.outbox_states; sending itself is the provider's
task, enqueued by messages.outbox_dispatch once the transaction commits.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.files.base import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from emailplatform import topics

from . import selectors
from .events import events_record
from .models import (
    Account,
    Attachment,
    Message,
    OutboundAttachment,
    OutboundMessage,
    OutboundRecipient,
)
from .outbox_checks import (
    HeaderValueError,
    address_normalized,
    display_name_checked,
    header_safe,
    one_line,
)
from .outbox_dispatch import outbox_dispatch
from .outbox_mime import (
    FilePart,
    MimeInput,
    Person,
    content_type_clean,
    forward_subject,
    mime_build,
    reply_references,
    reply_subject,
)
from .outbox_states import outbound_cancel, outbound_queue, queued_fields
from .selectors import User
from .services import attachment_ensure_stored

__all__ = [
    "Composed",
    "OutboxRefused",
    "Owned",
    "outbound_attachment_add",
    "outbound_attachment_remove",
    "outbound_cancel_request",
    "outbound_composed",
    "outbound_create",
    "outbound_delete",
    "outbound_send",
    "outbound_update",
    "outbox_dispatch",
]

State = OutboundMessage.State
KINDS = ("to", "cc", "bcc")
MAX_RECIPIENTS = 500
MAX_SCHEDULE_AHEAD = timedelta(days=366)
# Accounts in these states send nothing: the owner paused it, its login is refused, or it goes.
NOT_SENDING = {
    Account.Status.PAUSED: ("account_paused", "The account is paused: resume it to send."),
    Account.Status.AUTH_ERROR: (
        "account_auth_error",
        "The account's login is refused by its server: fix its password to send.",
    ),
    Account.Status.DELETING: ("account_deleting", "The account is being deleted."),
}


class OutboxRefused(Exception):
    """What the outbox will not do, for the client: HTTP STATUS, a stable CODE, a readable
    MESSAGE, and the input FIELD it is about (a dotted path), if any."""

    def __init__(
        self, message: str, *, code: str = "invalid", status: int = 400, field: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.field = field


@dataclass(frozen=True)
class Recipient:
    kind: str
    name: str
    address: str


def _not_found(what: str, field: str | None = None) -> OutboxRefused:
    return OutboxRefused(f"No {what} among yours.", code="not_found", status=404, field=field)


# Checks ------------------------------------------------------------------------------------
def size_limit(account: Account) -> int:
    """The largest message ACCOUNT sends, in bytes of MIME."""
    own = (account.sync_settings or {}).get("sendMaxBytes")
    if isinstance(own, int) and not isinstance(own, bool) and own > 0:
        return own
    return settings.OUTBOUND_MAX_MESSAGE_BYTES


def _check_provider(account: Account) -> None:
    if account.provider not in topics.OUTBOUND_SEND_TASKS:
        raise OutboxRefused(
            f"{account.get_provider_display()} accounts cannot send mail.",
            code="cannot_send",
            field="account",
        )


def _check_can_send(account: Account) -> None:
    _check_provider(account)
    refusal = NOT_SENDING.get(account.status)
    if refusal is not None:
        code, message = refusal
        raise OutboxRefused(message, code=code, status=409)


def _header(value: str, what: str, field: str) -> str:
    try:
        return header_safe(value, what)
    except HeaderValueError as exc:
        raise OutboxRefused(str(exc), code="header_injection", field=field) from None


def _recipients(data: dict[str, Any]) -> list[Recipient]:
    people: list[Recipient] = []
    for kind in KINDS:
        for index, person in enumerate(data.get(kind) or []):
            field = f"{kind}.{index}"
            raw_address = str(person.get("address") or "")
            raw_name = str(person.get("name") or "")
            try:
                address = address_normalized(raw_address)
            except HeaderValueError as exc:
                code = "header_injection" if _breaks_line(raw_address) else "invalid_address"
                raise OutboxRefused(str(exc), code=code, field=f"{field}.address") from None
            try:
                name = display_name_checked(raw_name, address)
            except HeaderValueError as exc:
                code = "header_injection" if _breaks_line(raw_name) else "invalid_name"
                raise OutboxRefused(str(exc), code=code, field=f"{field}.name") from None
            people.append(Recipient(kind, name, address))
    if len(people) > MAX_RECIPIENTS:
        raise OutboxRefused(f"At most {MAX_RECIPIENTS} recipients.", field="to")
    return people


def _breaks_line(value: str) -> bool:
    try:
        header_safe(value, "value")
    except HeaderValueError:
        return True
    return False


def _envelope(people: Iterable[Recipient]) -> list[Recipient]:
    """One envelope recipient per address (case-insensitively), the first one given."""
    seen: dict[str, Recipient] = {}
    for person in people:
        seen.setdefault(person.address.lower(), person)
    return list(seen.values())


def _send_at_checked(send_at: datetime | None) -> datetime | None:
    if send_at is not None and send_at > timezone.now() + MAX_SCHEDULE_AHEAD:
        raise OutboxRefused("send_at is more than a year ahead.", field="send_at")
    return send_at


# Compose -----------------------------------------------------------------------------------
def _message_id(address: str) -> str:
    domain = address.rpartition("@")[2] or "localhost"
    return f"<{uuid.uuid4().hex}@{domain}>"


def _forward_text(original: Message, text: str) -> str:
    lines = [
        "---------- Forwarded message ----------",
        f"From: {original.from_name} <{original.from_address}>",
        f"Date: {original.date.isoformat() if original.date else ''}",
        f"Subject: {original.subject}",
    ]
    body = "\n".join(lines) + "\n\n" + (original.body_text or "")
    return f"{text}\n\n{body}" if text else body


def outbound_create(*, user: User, data: dict[str, Any]) -> OutboundMessage:
    """A new draft from the API's validated DATA; sent at once when data["send"] (in the same
    transaction: refused, nothing is stored)."""
    # The batch module builds on this one; a compose is a batch of one (one write path).
    from .outbox_batch import outbound_store

    [outbound] = outbound_store([outbound_composed(data, Owned.load(user, [data]))])
    return outbound


# The objects an input names, and the rows it makes ------------------------------------------
@dataclass
class Owned:
    """The user's accounts, messages and attachments that compose inputs name, each kind
    loaded once for all the inputs (a constant number of queries, however many there are)."""

    accounts: dict[int, Account]
    messages: dict[int, Message]
    attachments: dict[int, Attachment]

    @classmethod
    def load(cls, user: User, items: Sequence[dict[str, Any]]) -> Owned:
        parents = ("reply_to_message", "forward_of")
        return cls(
            accounts=selectors.accounts_by_id(user=user, ids={d["account"] for d in items}),
            messages=selectors.messages_by_id(
                user=user, ids={d[k] for d in items for k in parents if d.get(k) is not None}
            ),
            attachments=selectors.attachments_by_id(
                user=user, ids={i for d in items for i in d.get("attachments") or []}
            ),
        )

    def account(self, account_id: int) -> Account:
        account = self.accounts.get(account_id)
        if account is None:
            raise _not_found(f"account {account_id}", "account")
        return account

    def message(self, message_id: int | None, field: str) -> Message | None:
        if message_id is None:
            return None
        message = self.messages.get(message_id)
        if message is None:
            raise _not_found(f"message {message_id}", field)
        return message

    def attachments_named(self, ids: Sequence[int]) -> list[Attachment]:
        found = []
        for index, attachment_id in enumerate(ids):
            attachment = self.attachments.get(attachment_id)
            if attachment is None:
                raise _not_found(f"attachment {attachment_id}", f"attachments.{index}")
            found.append(attachment)
        return found


@dataclass(frozen=True)
class Composed:
    """One compose input checked and built: its rows, not yet stored; the message is queued
    (MIME bytes fixed, due at send_at or now) when the input asked to send."""

    outbound: OutboundMessage
    recipients: list[OutboundRecipient]
    attachments: list[OutboundAttachment]

    @property
    def queued(self) -> bool:
        return self.outbound.state == State.QUEUED


def outbound_composed(
    data: dict[str, Any], owned: Owned, *, now: datetime | None = None
) -> Composed:
    """DATA (the API's validated compose input) checked and built, every object it names
    looked up in OWNED; OutboxRefused when it cannot be stored (or sent, with send: true)."""
    account = owned.account(data["account"])
    _check_provider(account)
    send = bool(data.get("send"))
    if send:
        _check_can_send(account)
    send_at = _send_at_checked(data.get("send_at"))
    people = _recipients(data)
    subject = _header(data.get("subject") or "", "subject", "subject")
    text, html = data.get("text") or "", data.get("html") or ""
    reply_to = owned.message(data.get("reply_to_message"), "reply_to_message")
    forward_of = owned.message(data.get("forward_of"), "forward_of")
    if reply_to is not None and forward_of is not None:
        raise OutboxRefused("Reply to a message or forward one, not both.", field="forward_of")
    sources = owned.attachments_named(data.get("attachments") or [])
    in_reply_to, references = "", []
    parent = reply_to or forward_of
    if parent is not None:
        in_reply_to, references = reply_references(
            parent.message_id_header, parent.references or []
        )
        base = subject or one_line(parent.subject)
        subject = _header(
            reply_subject(base) if reply_to else forward_subject(base), "subject", "subject"
        )
    if forward_of is not None:
        text = _forward_text(forward_of, text)
        if data.get("forward_attachments", True):
            known = {a.pk for a in sources}
            sources += [a for a in forward_of.attachments.all() if a.pk not in known]
    outbound = OutboundMessage(
        account=account,
        message_id_header=_message_id(account.email_address),
        envelope_id=uuid.uuid4().hex,
        from_name=account.display_name,
        from_address=account.email_address,
        subject=subject,
        body_text=text,
        body_html=html,
        reply_to_message=reply_to,
        forward_of=forward_of,
        in_reply_to=in_reply_to,
        references=references,
        notify_success=bool(data.get("notify_success", False)),
        **_people_fields(people),
    )
    attachments = [
        OutboundAttachment(
            outbound=outbound,
            filename=a.filename,
            content_type=a.content_type,
            size=a.size,
            sha256=a.sha256,
            source=a,
        )
        for a in sources
    ]
    if send:
        raw = _queue_checked(outbound, attachments, has_recipients=bool(people))
        for name, value in queued_fields(raw, send_at, now).items():
            setattr(outbound, name, value)
    return Composed(outbound, _recipient_rows(outbound, people), attachments)


def _people_fields(people: list[Recipient]) -> dict[str, list[dict[str, str]]]:
    return {
        kind: [{"name": p.name, "address": p.address} for p in people if p.kind == kind]
        for kind in KINDS
    }


def _recipient_rows(outbound: OutboundMessage, people: list[Recipient]) -> list[OutboundRecipient]:
    return [
        OutboundRecipient(outbound=outbound, kind=p.kind, name=p.name, address=p.address)
        for p in _envelope(people)
    ]


def _recipients_replace(outbound: OutboundMessage, people: list[Recipient]) -> None:
    OutboundRecipient.objects.filter(outbound=outbound).delete()
    OutboundRecipient.objects.bulk_create(_recipient_rows(outbound, people))


def _locked_draft(outbound_id: int) -> OutboundMessage:
    outbound = (
        OutboundMessage.objects.select_for_update(of=("self",))
        .select_related("account")
        .filter(pk=outbound_id)
        .first()
    )
    if outbound is None:
        raise _not_found("outbound message")
    if outbound.state != State.DRAFT:
        raise OutboxRefused(
            f"Only a draft can change; this message is {outbound.state}.",
            code="not_a_draft",
            status=409,
        )
    return outbound


def outbound_update(*, outbound: OutboundMessage, data: dict[str, Any]) -> OutboundMessage:
    """Change a draft's recipients, subject or bodies (keys absent from DATA stay)."""
    people = _recipients(data) if any(kind in data for kind in KINDS) else None
    with transaction.atomic():
        draft = _locked_draft(outbound.pk)
        fields = ["updated_at"]
        if people is not None:
            current = {
                kind: [Recipient(kind, p["name"], p["address"]) for p in getattr(draft, kind)]
                for kind in KINDS
            }
            for kind in KINDS:
                if kind in data:
                    current[kind] = [p for p in people if p.kind == kind]
            merged = [p for kind in KINDS for p in current[kind]]
            for kind, value in _people_fields(merged).items():
                setattr(draft, kind, value)
            fields += list(KINDS)
            _recipients_replace(draft, merged)
        for name, column in (("subject", "subject"), ("text", "body_text"), ("html", "body_html")):
            if name in data:
                value = data[name] or ""
                if name == "subject":
                    value = _header(value, "subject", "subject")
                setattr(draft, column, value)
                fields.append(column)
        if "notify_success" in data:
            draft.notify_success = bool(data["notify_success"])
            fields.append("notify_success")
        draft.save(update_fields=fields)
        events_record(draft.account, "outbound", "updated", [draft.pk])
    return draft


def outbound_attachment_add(
    *, outbound: OutboundMessage, upload: File, filename: str, content_type: str
) -> OutboundAttachment:
    """Attach an uploaded file to a draft (stored once per content, by its sha256)."""
    filename = _header(filename, "file name", "file")
    limit = size_limit(outbound.account)
    size = upload.size or 0
    if size > limit:
        raise OutboxRefused(
            f"The file is {size} bytes; this account sends at most {limit} bytes a message.",
            code="too_large",
            field="file",
        )
    digest = hashlib.sha256()
    for chunk in upload.chunks():
        digest.update(chunk)
    sha256 = digest.hexdigest()
    name = f"outbound/{sha256[:2]}/{sha256}"
    if not default_storage.exists(name):
        upload.seek(0)
        name = default_storage.save(name, upload)
    with transaction.atomic():
        draft = _locked_draft(outbound.pk)
        attached = draft.attachments.aggregate(total=Sum("size"))["total"] or 0
        if attached + size > limit:
            raise OutboxRefused(
                f"With this file the attachments come to {attached + size} bytes; this account "
                f"sends at most {limit} bytes a message.",
                code="too_large",
                field="file",
            )
        attachment = OutboundAttachment.objects.create(
            outbound=draft,
            filename=filename,
            content_type=content_type_clean(content_type),
            size=size,
            sha256=sha256,
            file=name,
        )
        draft.save(update_fields=["updated_at"])
        events_record(draft.account, "outbound", "updated", [draft.pk])
    return attachment


def outbound_attachment_remove(*, outbound: OutboundMessage, attachment_id: int) -> None:
    """Take a file off a draft (its stored file goes with the storage sweep once nothing
    names it)."""
    with transaction.atomic():
        draft = _locked_draft(outbound.pk)
        removed, _ = draft.attachments.filter(pk=attachment_id).delete()
        if not removed:
            raise _not_found("attachment of this message", field="attachment")
        draft.save(update_fields=["updated_at"])
        events_record(draft.account, "outbound", "updated", [draft.pk])


# Deleting: only what no worker may be sending. A queued message is cancelled first, so that
# a delete never races a worker's claim.
DELETABLE = (State.DRAFT, State.CANCELLED, State.FAILED, State.SENT)


def outbound_delete(*, outbound: OutboundMessage) -> None:
    """Delete an outbound message with its recipients, attachments and reports' links; 409
    while it is queued (cancel it first), being sent or its outcome is being checked. A sent
    message's copy in Sent stays."""
    with transaction.atomic():
        current = (
            OutboundMessage.objects.select_for_update(of=("self",))
            .select_related("account")
            .filter(pk=outbound.pk)
            .first()
        )
        if current is None:
            raise _not_found("outbound message")
        if current.state not in DELETABLE:
            hint = " Cancel it first." if current.state == State.QUEUED else ""
            raise OutboxRefused(
                f"The message is {current.state}: it cannot be deleted now.{hint}",
                code="not_deletable",
                status=409,
            )
        account, pk = current.account, current.pk
        current.delete()
        events_record(account, "outbound", "deleted", [pk])


# Send and cancel ---------------------------------------------------------------------------
def _file_parts(attachments: Iterable[OutboundAttachment]) -> list[FilePart]:
    parts = []
    for attachment in attachments:
        if attachment.file:
            name = attachment.file.name
        elif attachment.source is not None:
            name = attachment_ensure_stored(attachment=attachment.source).file.name
        else:
            raise OutboxRefused(
                f"The attachment {attachment.filename!r} is no longer stored: remove it.",
                code="attachment_unavailable",
                status=409,
            )
        with default_storage.open(name, "rb") as handle:
            data = handle.read()
        parts.append(FilePart(attachment.filename, attachment.content_type, data))
    return parts


def mime_of(
    outbound: OutboundMessage,
    *,
    date: datetime | None = None,
    attachments: Iterable[OutboundAttachment] | None = None,
) -> bytes:
    """OUTBOUND's MIME bytes, as they will be sent; with its stored attachments, or with
    ATTACHMENTS when given (a message not stored yet)."""

    def people(kind: str) -> list[Person]:
        return [Person(p.get("name") or "", p["address"]) for p in getattr(outbound, kind)]

    if attachments is None:
        attachments = outbound.attachments.select_related("source").order_by("id")
    return mime_build(
        MimeInput(
            sender=Person(one_line(outbound.from_name), outbound.from_address),
            to=people("to"),
            cc=people("cc"),
            subject=outbound.subject,
            text=outbound.body_text,
            html=outbound.body_html,
            message_id=outbound.message_id_header,
            date=date or timezone.now(),
            in_reply_to=outbound.in_reply_to,
            references=outbound.references or [],
            attachments=_file_parts(attachments),
        )
    )


def outbound_send(*, outbound: OutboundMessage, send_at: datetime | None = None) -> OutboundMessage:
    """draft -> queued: checked, its MIME built and measured, then its send task enqueued (at
    SEND_AT when given). Refused (nothing queued) when the draft cannot go as it is."""
    send_at = _send_at_checked(send_at)
    with transaction.atomic():
        draft = _locked_draft(outbound.pk)
        return _queue(draft, send_at, has_recipients=draft.recipients.exists())


def _queue(
    draft: OutboundMessage, send_at: datetime | None, *, has_recipients: bool
) -> OutboundMessage:
    """DRAFT (locked) checked, built and queued."""
    raw = _queue_checked(draft, None, has_recipients=has_recipients)
    queued = outbound_queue(draft.pk, raw, send_at)
    if queued is None:  # pragma: no cover (the row is locked as a draft)
        raise OutboxRefused("The message is no longer a draft.", code="not_a_draft", status=409)
    outbox_dispatch(queued)
    return queued


def _queue_checked(
    outbound: OutboundMessage,
    attachments: Iterable[OutboundAttachment] | None,
    *,
    has_recipients: bool,
) -> bytes:
    """OUTBOUND's MIME bytes (see mime_of), once checked that it can go as it is: its account
    sends now, it has recipients, it is not too large."""
    _check_can_send(outbound.account)
    if not has_recipients:
        raise OutboxRefused(
            "No recipients: give at least one address in to, cc or bcc.",
            code="no_recipients",
            field="to",
        )
    raw = mime_of(outbound, attachments=attachments)
    limit = size_limit(outbound.account)
    if len(raw) > limit:
        raise OutboxRefused(
            f"The message is {len(raw)} bytes once encoded; this account sends at most "
            f"{limit} bytes.",
            code="too_large",
        )
    return raw


def outbound_cancel_request(*, outbound: OutboundMessage) -> OutboundMessage:
    """draft or queued -> cancelled (again: unchanged); 409 once a worker has started."""
    cancelled = outbound_cancel(outbound.pk)
    if cancelled is not None:
        return cancelled
    current = OutboundMessage.objects.select_related("account").get(pk=outbound.pk)
    if current.state == State.CANCELLED:
        return current
    raise OutboxRefused(
        f"Too late to cancel: the message is {current.state}.", code="too_late", status=409
    )
