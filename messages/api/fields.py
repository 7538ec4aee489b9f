"""Strict input types: JSON is taken as typed, query values as spelled in the schema.

DRF coerces by default ("5" becomes 5, 1 becomes true, 5 becomes "5"); an API that documents
types should refuse what does not match them, so a client's bug shows at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework import serializers


def _type_error(field: serializers.Field, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(field, serializers.BooleanField):
        return None if isinstance(value, bool) else "Must be true or false."
    if isinstance(field, serializers.IntegerField):
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else "Must be an integer."
    if isinstance(field, serializers.FloatField):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else "Must be a number."
    if isinstance(field, serializers.CharField | serializers.ChoiceField):
        return None if isinstance(value, str) else "Must be a string."
    if isinstance(field, serializers.ListField):
        if not isinstance(value, list):
            return "Must be a list."
        for item in value:
            error = _type_error(field.child, item)
            if error:
                return f"Every item: {error[0].lower()}{error[1:]}"
        return None
    if isinstance(field, serializers.Serializer):
        return None if isinstance(value, Mapping) else "Must be an object."
    return None


class StrictJsonInput(serializers.Serializer):
    """An input serializer for JSON bodies that refuses values of the wrong JSON type."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return super().to_internal_value(data)
        errors: dict[str, Any] = {}
        for name, field in self.fields.items():
            if not field.read_only and name in data:
                error = _type_error(field, data[name])
                if error:
                    errors[name] = [error]
        if not errors:
            return super().to_internal_value(data)
        # Validate the rest too, so one answer names every field that is wrong.
        try:
            super().to_internal_value({k: v for k, v in data.items() if k not in errors})
        except serializers.ValidationError as exc:
            detail = (
                exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
            )
            errors = {**detail, **errors}
        raise serializers.ValidationError(errors)


class QueryBooleanField(serializers.BooleanField):
    """A query parameter spelled true/false or 1/0, nothing else."""

    # The Python values: DRF's stand-in for an absent parameter of a form-like QueryDict.
    TRUE_VALUES = {"true", "1", True}
    FALSE_VALUES = {"false", "0", False}
    NULL_VALUES: set = set()
    default_error_messages = {"invalid": "Must be true or false (or 1 or 0)."}
