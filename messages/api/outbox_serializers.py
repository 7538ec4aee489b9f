"""The outbox's input and output serializers. Inputs check types and bounds; what mail itself
refuses (addresses, header injection, sizes, states) is the outbox service's to say
(messages.outbox), so the API and the admin refuse the same things."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.validators import ProhibitSurrogateCharactersValidator

from messages.models import OutboundMessage, OutboundRecipient

from .fields import StrictJsonInput
from .filters import check_utc_offset
from .schema import MAX_ID
from .serializers import DeliveryReportOutput, Person, _people

MAX_TEXT_CHARS = 10 * 1024 * 1024


_SURROGATE = re.compile("[\ud800-\udfff]")


def _no_surrogates(value: str) -> None:
    if _SURROGATE.search(value):
        raise serializers.ValidationError("Contains invalid characters (lone surrogates).")


class TextInput(serializers.CharField):
    """Text taken exactly as given (no trimming: a trailing CR LF is refused, not hidden).
    Lone surrogates are refused by one regular expression, instead of DRF's check, which
    looks at the text a character at a time in Python (a tenth of a batch's time)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        kwargs.setdefault("required", False)
        kwargs.setdefault("allow_blank", True)
        super().__init__(**kwargs)
        self.validators = [
            v for v in self.validators if not isinstance(v, ProhibitSurrogateCharactersValidator)
        ]
        self.validators.append(_no_surrogates)


class IdInput(serializers.IntegerField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(**kwargs)


class SendAtInput(serializers.DateTimeField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("allow_null", True)
        kwargs.setdefault(
            "help_text", "Send at this time (ISO 8601) rather than now: scheduled sending."
        )
        super().__init__(**kwargs)

    def to_internal_value(self, value: Any) -> Any:
        parsed = super().to_internal_value(value)
        try:
            check_utc_offset(parsed)
        except Exception as exc:  # django.forms' ValidationError, as the filters raise it
            raise serializers.ValidationError(exc.messages) from None
        return parsed


class PersonInput(StrictJsonInput):
    name = TextInput(max_length=256, default="")
    address = TextInput(
        max_length=254, required=True, allow_blank=False, help_text="One plain address."
    )


def _people_input(kind: str) -> serializers.ListSerializer:
    return PersonInput(many=True, required=False, max_length=500, help_text=f"{kind} recipients.")


class OutboundCreateInput(StrictJsonInput):
    account = IdInput(help_text="The account that sends (one of yours).")
    to = _people_input("To")
    cc = _people_input("Cc")
    bcc = _people_input("Bcc (envelope only: never in the headers)")
    subject = TextInput(max_length=2000)
    text = TextInput(max_length=MAX_TEXT_CHARS, help_text="The plain-text body.")
    html = TextInput(max_length=MAX_TEXT_CHARS, help_text="The HTML body.")
    reply_to_message = IdInput(
        required=False,
        allow_null=True,
        help_text='A stored message of yours this answers: In-Reply-To, References, "Re: ".',
    )
    forward_of = IdInput(
        required=False,
        allow_null=True,
        help_text='A stored message of yours this forwards: its text quoted, "Fwd: ".',
    )
    forward_attachments = serializers.BooleanField(
        default=True, help_text="With forward_of: include the original's attachments."
    )
    attachments = serializers.ListField(
        child=IdInput(),
        required=False,
        max_length=100,
        help_text="Stored attachments (ids) of your messages to send along.",
    )
    notify_success = serializers.BooleanField(
        default=False, help_text="Ask for a delivery notification on success too."
    )
    send = serializers.BooleanField(
        default=False, help_text="Send at once (or at send_at) rather than keep a draft."
    )
    send_at = SendAtInput()

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("send_at") is not None and not attrs.get("send"):
            raise serializers.ValidationError({"send_at": ["Only with send: true."]})
        return attrs


class OutboundBatchInput(StrictJsonInput):
    messages = OutboundCreateInput(
        many=True,
        allow_empty=False,
        help_text="What POST /api/outbound/ takes, for each message (1 to OUTBOX_BATCH_MAX, "
        "100 by default).",
    )

    def to_internal_value(self, data: Any) -> Any:
        # Counted before any item is validated: an oversized batch costs nothing to refuse.
        items = data.get("messages") if isinstance(data, dict) else None
        most = settings.OUTBOX_BATCH_MAX
        if isinstance(items, list) and len(items) > most:
            raise serializers.ValidationError(
                {"messages": [f"At most {most} messages in one batch; {len(items)} given."]}
            )
        return super().to_internal_value(data)


class OutboundUpdateInput(StrictJsonInput):
    to = _people_input("To (replaces the draft's)")
    cc = _people_input("Cc (replaces the draft's)")
    bcc = _people_input("Bcc (replaces the draft's)")
    subject = TextInput(max_length=2000)
    text = TextInput(max_length=MAX_TEXT_CHARS)
    html = TextInput(max_length=MAX_TEXT_CHARS)
    notify_success = serializers.BooleanField(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs:
            raise serializers.ValidationError(
                "Give to, cc, bcc, subject, text, html or notify_success."
            )
        return attrs


class OutboundSendInput(StrictJsonInput):
    send_at = SendAtInput()


class AttachmentUploadInput(serializers.Serializer):
    file = serializers.FileField(help_text="The file (multipart/form-data).")
    filename = TextInput(
        max_length=255, help_text="Its name in the mail (default: the uploaded file's name)."
    )


# Outputs -----------------------------------------------------------------------------------
class OutboundRecipientOutput(serializers.Serializer):
    kind = serializers.ChoiceField(choices=OutboundRecipient.Kind.choices)
    name = serializers.CharField()
    address = serializers.CharField()
    status = serializers.ChoiceField(
        choices=OutboundRecipient.Status.choices,
        help_text="pending, then accepted/rejected by the sending server, then what delivery "
        "reports say (delivered, relayed, expanded, delayed, bounced).",
    )
    smtp_code = serializers.IntegerField(allow_null=True, help_text="The server's reply code.")
    smtp_reply = serializers.CharField()
    action = serializers.CharField(help_text="From the delivery report (RFC 3464 Action).")
    status_code = serializers.CharField(help_text="From the delivery report, e.g. 5.1.1.")
    diagnostic_code = serializers.CharField()
    remote_mta = serializers.CharField()
    reported_at = serializers.DateTimeField(allow_null=True)
    report_message = serializers.IntegerField(
        source="report_message_id", allow_null=True, help_text="The report mail (message id)."
    )


class OutboundAttachmentOutput(serializers.Serializer):
    id = serializers.IntegerField()
    filename = serializers.CharField()
    content_type = serializers.CharField()
    size = serializers.IntegerField()
    source = serializers.IntegerField(
        source="source_id", allow_null=True, help_text="The stored attachment forwarded."
    )


class OutboundOutput(serializers.Serializer):
    id = serializers.IntegerField()
    account = serializers.IntegerField(source="account_id")
    state = serializers.ChoiceField(
        choices=OutboundMessage.State.choices,
        help_text="draft -> queued -> sending -> sent, or failed (see last_error), or "
        "cancelled; unknown: the server may have it, checked before any resend.",
    )
    subject = serializers.CharField()
    sender = serializers.SerializerMethodField(method_name="get_from")
    to = serializers.SerializerMethodField()
    cc = serializers.SerializerMethodField()
    bcc = serializers.SerializerMethodField()
    message_id = serializers.CharField(source="message_id_header")
    send_at = serializers.DateTimeField(allow_null=True)
    queued_at = serializers.DateTimeField(allow_null=True)
    sent_at = serializers.DateTimeField(allow_null=True)
    attempts = serializers.IntegerField()
    next_attempt_at = serializers.DateTimeField(allow_null=True)
    last_error = serializers.CharField(help_text="Readable reason of the last failure.")
    size = serializers.IntegerField(help_text="Bytes of MIME, once queued.")
    reply_to_message = serializers.IntegerField(source="reply_to_message_id", allow_null=True)
    forward_of = serializers.IntegerField(source="forward_of_id", allow_null=True)
    sent_message = serializers.IntegerField(
        source="sent_message_id", allow_null=True, help_text="The stored copy, once sent."
    )
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        fields["from"] = fields.pop("sender")
        return fields

    @extend_schema_field(Person)
    def get_from(self, outbound: OutboundMessage) -> dict[str, str]:
        return {"name": outbound.from_name, "address": outbound.from_address}

    @extend_schema_field(Person(many=True))
    def get_to(self, outbound: OutboundMessage) -> list[dict[str, str]]:
        return _people(outbound.to)

    @extend_schema_field(Person(many=True))
    def get_cc(self, outbound: OutboundMessage) -> list[dict[str, str]]:
        return _people(outbound.cc)

    @extend_schema_field(Person(many=True))
    def get_bcc(self, outbound: OutboundMessage) -> list[dict[str, str]]:
        return _people(outbound.bcc)


class OutboundDetailOutput(OutboundOutput):
    text = serializers.CharField(source="body_text")
    html = serializers.CharField(
        source="body_html", help_text="As composed (your own HTML, not sanitized)."
    )
    in_reply_to = serializers.CharField()
    references = serializers.ListField(child=serializers.CharField())
    notify_success = serializers.BooleanField()
    envelope_id = serializers.CharField(help_text="SMTP ENVID (RFC 3461).")
    recipients = OutboundRecipientOutput(many=True, source="recipients.all")
    attachments = OutboundAttachmentOutput(many=True, source="attachments.all")
    reports = DeliveryReportOutput(
        many=True, source="reports.all", help_text="Delivery reports matched to this message."
    )


class OutboundBatchOutput(serializers.Serializer):
    messages = OutboundOutput(many=True, help_text="The messages, in the order given.")
