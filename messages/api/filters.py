"""Query filters of the list endpoints (django-filter), strict: a malformed value is a 400."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import django_filters
from django import forms
from django.db import DatabaseError, connection, transaction
from django.db.models import BigIntegerField, BooleanField, Exists, OuterRef, Q, QuerySet, Value
from django.db.models.expressions import RawSQL
from django.db.models.functions import Cast
from django_filters import fields as filter_fields
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field

from messages import selectors
from messages.models import Folder, Message, MessageLocation, Thread

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


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# Recipients are JSON lists of {"name", "address"}: match the values, never the keys.
_RECIPIENT_SQL = """
    EXISTS (
        SELECT 1
          FROM jsonb_array_elements("mailstore_message"."to" || "mailstore_message"."cc") AS p
         WHERE p ->> 'address' ILIKE %s OR p ->> 'name' ILIKE %s
    )
"""


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
    account = IdFilter(method="filter_account", help_text="Only this account's messages.")
    folder = IdFilter(method="filter_folder", help_text="Only messages in this folder (id).")
    thread = IdFilter(field_name="thread_id", help_text="Only this thread's messages.")
    unread = StrictBooleanFilter(method="filter_unread", help_text="Unread (true) or read.")
    flagged = StrictBooleanFilter(field_name="is_flagged")
    has_attachments = StrictBooleanFilter(field_name="has_attachments")
    to = django_filters.CharFilter(
        method="filter_to", help_text="A To or Cc name or address contains this."
    )
    subject = django_filters.CharFilter(field_name="subject", lookup_expr="icontains")
    after = DateTimeFilter(
        field_name="sort_date", lookup_expr="gte", help_text="Dated at or after (ISO 8601)."
    )
    before = DateTimeFilter(
        field_name="sort_date", lookup_expr="lt", help_text="Dated before (ISO 8601)."
    )
    q = django_filters.CharFilter(
        method="filter_q",
        help_text=(
            "Full-text search in subject, sender and body, newest first (see `order`); "
            'web-search syntax: "exact phrase", or, -excluded.'
        ),
    )
    order = ChoiceFilter(
        choices=SEARCH_ORDERS,
        method="filter_order",
        help_text=(
            "Of search results (with q): newest first (the default, as mail clients list "
            "them), or relevance: subject matches above sender above body, then newest. "
            "Relevance ranks every match, so it is slower for common words."
        ),
    )

    class Meta:
        model = Message
        fields: list[str] = []

    def filter_account(self, queryset: QuerySet, name: str, value: int) -> QuerySet:
        # A bigint, not the integer a parameter is sent as: btree_gin's (account, search_vector)
        # index answers only bigint = bigint, so a search would miss its account column.
        return queryset.filter(account_id=Cast(Value(value), BigIntegerField()))

    def filter_queryset(self, queryset: QuerySet) -> QuerySet:
        from rest_framework.exceptions import ValidationError

        cleaned = self.form.cleaned_data
        if cleaned.get("order") is not None and not (cleaned.get("q") or "").strip():
            raise ValidationError({"order": ["Orders search results: give q as well."]})
        return super().filter_queryset(queryset)

    def filter_folder(self, queryset: QuerySet, name: str, value: int) -> QuerySet:
        return queryset  # the view's queryset starts from the folder (selectors.message_list)

    def filter_unread(self, queryset: QuerySet, name: str, value: bool | None) -> QuerySet:
        return queryset if value is None else queryset.filter(is_read=not value)

    def filter_from(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.filter(Q(from_name__icontains=value) | Q(from_address__icontains=value))

    def filter_to(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        pattern = _like(value)
        return queryset.filter(
            RawSQL(_RECIPIENT_SQL, [pattern, pattern], output_field=BooleanField())  # noqa: S611
        )

    def filter_q(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        if not value.strip():
            return queryset
        check_search_query(value)
        ranked = self.form.cleaned_data.get("order") == "relevance"
        return selectors.message_search(queryset, value, ranked=ranked)

    def filter_order(self, queryset: QuerySet, name: str, value: str | None) -> QuerySet:
        return queryset  # applied by filter_q


# "from" is a Python keyword: declared after the class body.
MessageFilter.base_filters["from"] = django_filters.CharFilter(
    field_name="from", method="filter_from", help_text="The sender's name or address contains this."
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
