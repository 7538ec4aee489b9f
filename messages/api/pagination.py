"""Cursor pagination on a composite key: stable and exact under ties, cheap at any depth.

DRF's CursorPagination positions on the first ordering field and skips ties with an offset;
here the cursor holds the values of every ordering field (the last one being the unique id),
so the next page is one keyset condition, `(a, b, id) < (a0, b0, id0)` spelled out for mixed
directions, and an index on the ordering answers it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Model, Q, QuerySet
from rest_framework import exceptions
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.utils.urls import replace_query_param

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
MAX_UTC_OFFSET = timedelta(hours=15, minutes=59)


class InvalidCursor(exceptions.ValidationError):
    default_code = "invalid_cursor"


class KeysetCursorPagination(CursorPagination):
    page_size = DEFAULT_PAGE_SIZE
    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE
    ordering: Sequence[str] = ("-id",)
    cursor_query_description = "Opaque cursor from a previous page's `next` or `previous` link."
    page_size_query_description = (
        f"Results per page (default {DEFAULT_PAGE_SIZE}, at most {MAX_PAGE_SIZE})."
    )

    def paginate_queryset(
        self, queryset: QuerySet, request: Request, view: Any = None
    ) -> list[Model] | list[dict[str, Any]]:
        """The page: model instances, or dicts for a values() queryset."""
        self.ordering = self.get_ordering(request, queryset, view)
        fields = [(name.lstrip("-"), name.startswith("-")) for name in self.ordering]

        def fetch(position: list[Any] | None, reverse: bool, limit: int) -> list[Any]:
            order = [f"{'-' if desc != reverse else ''}{name}" for name, desc in fields]
            page = queryset.order_by(*order)
            if position is not None:
                page = page.filter(_after(fields, position, reverse))
            return list(page[:limit])

        types = [queryset.model._meta.get_field(name) for name, _ in fields]
        return self.paginate(request, fields, types, fetch)

    def paginate(
        self,
        request: Request,
        fields: list[tuple[str, bool]],
        types: list[Any],
        fetch: Callable[[list[Any] | None, bool, int], list[Any]],
    ) -> list[Any]:
        """A page of any source: `fields` are the ordering's (name, descending) pairs, the
        last one unique, `types` the model fields that read a cursor's values back, and
        `fetch(position, reverse, limit)` the rows after the position (before it when
        reverse, nearest first). Rows are model instances or dicts keyed by field name."""
        self.request = request
        self.page_size = self.get_page_size(request)
        self.base_url = request.build_absolute_uri()
        position, reverse = self._decode(request, types)
        rows = fetch(position, reverse, self.page_size + 1)
        more = len(rows) > self.page_size
        self.page = rows[: self.page_size]
        if reverse:
            self.page.reverse()
            self.has_previous, self.has_next = more, True
        else:
            self.has_next, self.has_previous = more, position is not None
        self._fields = fields
        return self.page

    def get_page_size(self, request: Request) -> int:
        value = request.query_params.get(self.page_size_query_param)
        if value is None:
            return self.page_size
        try:
            size = int(value)
        except ValueError:
            size = 0
        if not 1 <= size <= self.max_page_size:
            raise exceptions.ValidationError(
                {self.page_size_query_param: [f"Give a whole number from 1 to {MAX_PAGE_SIZE}."]}
            )
        return size

    def get_ordering(self, request: Request, queryset: QuerySet, view: Any) -> tuple[str, ...]:
        return tuple(getattr(view, "ordering", None) or self.ordering)

    def get_next_link(self) -> str | None:
        if not self.has_next or not self.page:
            return None
        return self._link(self.page[-1], reverse=False)

    def get_previous_link(self) -> str | None:
        if not self.has_previous or not self.page:
            return None
        return self._link(self.page[0], reverse=True)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"].update(minimum=1, maximum=self.max_page_size)
        return parameters

    def _link(self, instance: Model | dict[str, Any], *, reverse: bool) -> str:
        values = [_plain(_value(instance, name)) for name, _ in self._fields]
        token = json.dumps({"p": values, "r": reverse}, separators=(",", ":"))
        encoded = base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")
        return replace_query_param(self.base_url, self.cursor_query_param, encoded)

    def _decode(self, request: Request, types: list[Any]) -> tuple[list[Any] | None, bool]:
        encoded = request.query_params.get(self.cursor_query_param)
        if not encoded:
            return None, False
        invalid = InvalidCursor({self.cursor_query_param: ["Invalid cursor."]})
        try:
            padded = encoded + "=" * (-len(encoded) % 4)
            token = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
            values, reverse = token["p"], token["r"]
        except (ValueError, UnicodeError, binascii.Error, KeyError, TypeError):
            raise invalid from None
        if (
            not isinstance(values, list)
            or len(values) != len(types)
            or not isinstance(reverse, bool)
        ):
            raise invalid
        try:
            position = [field.to_python(value) for field, value in zip(types, values, strict=True)]
        except (ValidationError, TypeError, ValueError):
            raise invalid from None
        if any(value is None for value in position):
            raise invalid
        # PostgreSQL refuses UTC offsets beyond 15:59 (Python allows 23:59).
        if any(
            isinstance(value, datetime)
            and value.utcoffset() is not None
            and abs(value.utcoffset()) > MAX_UTC_OFFSET
            for value in position
        ):
            raise invalid
        return position, reverse


def _value(instance: Model | dict[str, Any], name: str) -> Any:
    return instance[name] if isinstance(instance, dict) else getattr(instance, name)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _after(fields: list[tuple[str, bool]], position: list[Any], reverse: bool) -> Q:
    """Rows strictly after `position` in the ordering (before it when `reverse`)."""
    condition = Q()
    for index, (name, desc) in enumerate(fields):
        lookup = "lt" if desc != reverse else "gt"
        step = Q(**{f"{name}__{lookup}": position[index]})
        for earlier in range(index):
            step &= Q(**{fields[earlier][0]: position[earlier]})
        condition |= step
    # Implied by the above, but a bound an index can start from: a deep page is then read
    # from its position, not walked to from the first row.
    first, desc = fields[0]
    return condition & Q(**{f"{first}__{'lte' if desc != reverse else 'gte'}": position[0]})
