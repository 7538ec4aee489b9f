"""Query filters of the list endpoints (django-filter), strict: a malformed value is a 400."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import django_filters
from django import forms
from django.db import DatabaseError, connection, transaction
from django.db.models import Exists, OuterRef, QuerySet
from django_filters import fields as filter_fields
from django_filters.utils import translate_validation
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field

from messages import selectors
from messages.message_page import MessageQuery
from messages.models import Folder, Message, MessageLocation, OutboundMessage, Thread

from .schema import MAX_ID

# A parameter given empty is refused like any other malformed value (absent is no filter).
PRESENT_EMPTY_IS_INVALID = (None,)


class StrictBooleanField(forms.Field):
    widget = forms.TextInput
    empty_values = PRESENT_EMPTY_IS_INVALID

    def to_python(self, value: Any) -> bool | None:
        if value is None:
            return None
        if value in ("true", "1"):
            return True
        if value in ("false", "0"):
            return False
        raise forms.ValidationError("Enter true or false (or 1 or 0).", code="invalid")

    def validate(self, value: Any) -> None:
        return None


@extend_schema_field(OpenApiTypes.BOOL)
class StrictBooleanFilter(django_filters.BooleanFilter):
    field_class = StrictBooleanField


class StrictIntegerField(forms.IntegerField):
    empty_values = PRESENT_EMPTY_IS_INVALID


# PostgreSQL's timestamptz takes UTC offsets up to 15:59 (Python's up to 23:59).
MAX_UTC_OFFSET = timedelta(hours=15, minutes=59)


def check_utc_offset(value: datetime | None) -> None:
    offset = value.utcoffset() if value is not None else None
    if offset is not None and abs(offset) > MAX_UTC_OFFSET:
        raise forms.ValidationError(
            "The UTC offset must be between -15:59 and +15:59.", code="invalid"
        )


class StrictDateTimeField(filter_fields.IsoDateTimeField):
    empty_values = PRESENT_EMPTY_IS_INVALID

    def validate(self, value: Any) -> None:
        super().validate(value)
        check_utc_offset(value)


class StrictChoiceField(filter_fields.ChoiceField):
    empty_values = PRESENT_EMPTY_IS_INVALID

    def to_python(self, value: Any) -> str | None:
        return None if value is None else super().to_python(value)

    def validate(self, value: Any) -> None:
        """Django's ChoiceField checks only a non-empty value against the choices: `?role=`
        was a 200 with no filter (schemathesis: a schema-violating request accepted)."""
        super().validate(value)
        if value == "":
            raise forms.ValidationError(
                self.error_messages["invalid_choice"], code="invalid_choice", params={"value": ""}
            )


class DateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = StrictDateTimeField


class ChoiceFilter(django_filters.ChoiceFilter):
    field_class = StrictChoiceField


@extend_schema_field({"type": "integer", "minimum": 1, "maximum": MAX_ID})
class IdFilter(django_filters.Filter):
    field_class = StrictIntegerField

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(*args, **kwargs)


MAX_SEARCH_CHARS = 1000


def check_search_query(text: str) -> None:
    """A search PostgreSQL cannot parse is the client's error: a 400, not a 500.

    websearch_to_tsquery fails on some inputs (33 "-" in a row overflow its stack), so the
    text is parsed once, alone, before the search runs.
    """
    from rest_framework.exceptions import ValidationError

    if len(text) > MAX_SEARCH_CHARS:
        raise ValidationError({"q": [f"At most {MAX_SEARCH_CHARS} characters."]})
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT websearch_to_tsquery(%s::regconfig, %s)", [selectors.SEARCH_CONFIG, text]
            )
    except DatabaseError:
        raise ValidationError({"q": ["This search cannot be understood."]}) from None


SEARCH_ORDERS = [("newest", "newest"), ("relevance", "relevance")]


class MessageFilter(django_filters.FilterSet):
    """The message list's parameters, as the schema documents them. A request's are checked
    by their form (message_filter_form) and applied by the list's own SQL
    (messages.message_page), through message_query."""

    account = IdFilter(method="declared", help_text="Only this account's messages.")
    folder = IdFilter(method="declared", help_text="Only messages in this folder (id).")
    thread = IdFilter(method="declared", help_text="Only this thread's messages.")
    unread = StrictBooleanFilter(method="declared", help_text="Unread (true) or read.")
    flagged = StrictBooleanFilter(method="declared")
    has_attachments = StrictBooleanFilter(method="declared")
    to = django_filters.CharFilter(
        method="declared", help_text="A To or Cc name or address contains this."
    )
    subject = django_filters.CharFilter(method="declared")
    after = DateTimeFilter(method="declared", help_text="Dated at or after (ISO 8601).")
    before = DateTimeFilter(method="declared", help_text="Dated before (ISO 8601).")
    q = django_filters.CharFilter(
        method="declared",
        help_text=(
            "Full-text search in subject, sender and body, newest first (see `order`); "
            'web-search syntax: "exact phrase", or, -excluded.'
        ),
    )
    order = ChoiceFilter(
        choices=SEARCH_ORDERS,
        method="declared",
        help_text=(
            "Of search results (with q): newest first (the default, as mail clients list "
            "them), or relevance: subject matches above sender above body, then newest. "
            "Relevance ranks every match, so it is slower for common words."
        ),
    )

    class Meta:
        model = Message
        fields: list[str] = []

    # No type on `value`: the schema takes each parameter's type from its filter's class.
    def declared(self, queryset: QuerySet, name: str, value) -> QuerySet:
        return queryset  # applied by message_query's SQL, not to a queryset


# "from" is a Python keyword: declared after the class body.
MessageFilter.base_filters["from"] = django_filters.CharFilter(
    field_name="from", method="declared", help_text="The sender's name or address contains this."
)


class ThreadFilter(django_filters.FilterSet):
    account = IdFilter(field_name="account_id", help_text="Only this account's threads.")
    folder = IdFilter(method="filter_folder", help_text="Threads with a message in this folder.")
    unread = StrictBooleanFilter(method="filter_unread", help_text="Threads with unread mail.")
    flagged = StrictBooleanFilter(method="filter_flagged", help_text="Threads with flagged mail.")

    class Meta:
        model = Thread
        fields: list[str] = []

    def filter_folder(self, queryset: QuerySet, name: str, value: int) -> QuerySet:
        in_folder = MessageLocation.objects.filter(message__thread=OuterRef("pk"), folder_id=value)
        return queryset.filter(Exists(in_folder))

    def filter_unread(self, queryset: QuerySet, name: str, value: bool | None) -> QuerySet:
        return self._having(queryset, value, is_read=False)

    def filter_flagged(self, queryset: QuerySet, name: str, value: bool | None) -> QuerySet:
        return self._having(queryset, value, is_flagged=True)

    @staticmethod
    def _having(queryset: QuerySet, value: bool | None, **lookup: Any) -> QuerySet:
        if value is None:
            return queryset
        exists = Exists(Message.objects.filter(thread=OuterRef("pk"), **lookup))
        return queryset.filter(exists if value else ~exists)


class FolderFilter(django_filters.FilterSet):
    account = IdFilter(field_name="account_id", help_text="Only this account's folders.")
    role = ChoiceFilter(choices=Folder.Role.choices)

    class Meta:
        model = Folder
        fields: list[str] = []


class OutboundFilter(django_filters.FilterSet):
    account = IdFilter(field_name="account_id", help_text="Only this account's outbound mail.")
    state = ChoiceFilter(choices=OutboundMessage.State.choices)

    class Meta:
        model = OutboundMessage
        fields: list[str] = []


@lru_cache(maxsize=256)
def message_filter_form(names: frozenset[str]) -> type[forms.Form]:
    """The form of MessageFilter's parameters among NAMES, built once per set of names. A
    FilterSet deep-copies all its filters and builds a new form class for every request (about
    2 ms of a list's time); a form deep-copies its fields for every instance, so it holds only
    those a request gives (an absent parameter is no filter either way)."""
    fields = {
        name: spec.field for name, spec in MessageFilter.base_filters.items() if name in names
    }
    return type("MessageFilterForm", (forms.Form,), fields)


def message_query(params: Any) -> MessageQuery:
    """A list's query parameters, checked: a 400 naming what is wrong (a malformed value, an
    `order` without a search, a search PostgreSQL cannot parse)."""
    from rest_framework.exceptions import ValidationError

    form = message_filter_form(frozenset(params).intersection(MessageFilter.base_filters))(params)
    if not form.is_valid():
        raise translate_validation(form.errors)
    data = form.cleaned_data
    search = data["q"] if (data.get("q") or "").strip() else ""
    if data.get("order") is not None and not search:
        raise ValidationError({"order": ["Orders search results: give q as well."]})
    if search:
        check_search_query(search)
    return MessageQuery(
        account=data.get("account"),
        folder=data.get("folder"),
        thread=data.get("thread"),
        unread=data.get("unread"),
        flagged=data.get("flagged"),
        has_attachments=data.get("has_attachments"),
        to=data.get("to") or "",
        subject=data.get("subject") or "",
        sender=data.get("from") or "",
        after=data.get("after"),
        before=data.get("before"),
        search=search,
        ranked=data.get("order") == "relevance",
    )
