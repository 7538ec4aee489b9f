"""One error shape for the whole API, for DRF's errors, the store's and Django's own.

    {"error": {"code": "invalid", "message": "...", "fields": {"settings.imap_host": ["..."]}}}

`fields` is there for validation errors only: each key is the dotted path of the input field
that is wrong ("non_field_errors" for the input as a whole).
"""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import debug, defaults
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler as drf_exception_handler

from messages.outbox import OutboxRefused
from messages.providers import ProviderError, UnknownProvider
from messages.services import AttachmentUnavailable, ConflictError

API_PREFIX = "/api/"


class ErrorDetail(serializers.Serializer):
    code = serializers.CharField(help_text="Stable, machine-readable reason.")
    message = serializers.CharField(help_text="Readable by a person.")
    fields = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Validation errors only: why each input field (dotted path) was refused.",
    )


class ErrorResponse(serializers.Serializer):
    error = ErrorDetail()


def error_body(code: str, message: str, fields: dict[str, list[str]] | None = None) -> dict:
    error: dict[str, Any] = {"code": code, "message": message}
    if fields is not None:
        error["fields"] = fields
    return {"error": error}


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's EXCEPTION_HANDLER: every error in the shape above."""
    if isinstance(exc, ProviderError):
        return Response(error_body(exc.code, exc.message), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, OutboxRefused):
        fields = {exc.field: [exc.message]} if exc.field else None
        return Response(error_body(exc.code, exc.message, fields), status=exc.status)
    if isinstance(exc, ConflictError):
        return Response(error_body(exc.code, exc.message), status=status.HTTP_409_CONFLICT)
    if isinstance(exc, AttachmentUnavailable):
        body = error_body("attachment_unavailable", f"The attachment cannot be read: {exc}")
        return Response(body, status=status.HTTP_404_NOT_FOUND)
    if isinstance(exc, UnknownProvider):
        exc = exceptions.ValidationError({"provider": [f"Unknown provider {exc.args[0]!r}."]})
    elif isinstance(exc, RequestDataTooBig):
        exc = exceptions.ParseError("The request body is larger than this API accepts.")
    elif isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(as_serializer_error(exc))
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        fields = flatten_errors(exc.detail)
        code = exc.default_code if type(exc) is not exceptions.ValidationError else "invalid"
        response.data = error_body(code, _validation_message(fields), fields)
    elif isinstance(exc, exceptions.APIException):
        response.data = error_body(_code_of(exc), _message_of(exc.detail))
    return response


def flatten_errors(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested error detail as {"dotted.path": ["why", ...]}."""
    if isinstance(detail, dict):
        flat: dict[str, list[str]] = {}
        for key, value in detail.items():
            flat.update(flatten_errors(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(detail, list):
        if all(not isinstance(item, dict | list) for item in detail):
            return {prefix or "non_field_errors": [str(item) for item in detail]}
        flat = {}
        for index, item in enumerate(detail):
            if item:
                flat.update(flatten_errors(item, f"{prefix}.{index}" if prefix else str(index)))
        return flat
    return {prefix or "non_field_errors": [str(detail)]}


def _validation_message(fields: dict[str, list[str]]) -> str:
    named = [name for name in fields if name != "non_field_errors"]
    if not named:
        return " ".join(fields.get("non_field_errors", [])) or "Invalid input."
    return f"Invalid input: check {', '.join(named)}."


def _code_of(exc: exceptions.APIException) -> str:
    codes = exc.get_codes()
    if isinstance(codes, str) and codes not in ("error", "invalid"):
        return codes
    return str(exc.default_code)


def _message_of(detail: Any) -> str:
    if isinstance(detail, list):
        return " ".join(str(item) for item in detail)
    if isinstance(detail, dict):
        return " ".join(str(item) for item in flatten_errors(detail).values())
    return str(detail)


# Django's own error views, for what never reaches DRF (unknown URLs, CSRF failures, crashes).
def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIX)


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        body = error_body("not_found", "No such endpoint or object.")
        return JsonResponse(body, status=status.HTTP_404_NOT_FOUND)
    return defaults.page_not_found(request, exception)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        body = error_body("bad_request", "The request could not be understood.")
        return JsonResponse(body, status=status.HTTP_400_BAD_REQUEST)
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        body = error_body("permission_denied", "You do not have permission to do this.")
        return JsonResponse(body, status=status.HTTP_403_FORBIDDEN)
    return defaults.permission_denied(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        body = error_body("server_error", "Something went wrong on our side; it was logged.")
        return JsonResponse(body, status=status.HTTP_500_INTERNAL_SERVER_ERROR)
    return defaults.server_error(request)


# Error reports (the DEBUG page, mail to ADMINS) -------------------------------------------
_URL_PASSWORD = re.compile(
    r"(?P<head>[a-z][a-z0-9+.-]*://[^/@\s:]*:)(?P<password>[^/@\s]+)(?=@)", flags=re.I
)
_SECRET_NAMES = re.compile(
    r"API|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|CREDENTIAL|AUTHORIZATION", flags=re.I
)


def hide_url_passwords(text: str) -> str:
    """postgres://user:secret@host/db -> postgres://user:********************@host/db"""
    return _URL_PASSWORD.sub(
        lambda m: m.group("head") + debug.SafeExceptionReporterFilter.cleansed_substitute, text
    )


class SafeExceptionReporterFilter(debug.SafeExceptionReporterFilter):
    """Django's filter, and: passwords inside URLs (DATABASE_URL, REDIS_URL and the like, in
    settings, request.META or a frame) are masked; every frame's variables are cleansed like
    settings (a dict's "password" or "oauth2_token" is hidden, wherever it is); the
    Authorization header and credentials-named values are hidden."""

    hidden_settings = _SECRET_NAMES

    def is_active(self, request: Any) -> bool:
        # Django's filter steps aside when DEBUG is on: the page a developer (or, by mistake,
        # anyone) sees would show passwords in POST data and frames. Hide them always.
        return True

    def cleanse_setting(self, key: Any, value: Any) -> Any:
        cleansed = super().cleanse_setting(key, value)
        if type(cleansed) is str:  # not a lazy object: reading it could run code
            return hide_url_passwords(cleansed)
        return cleansed

    def get_post_parameters(self, request: Any) -> Any:
        # Every form field named like a secret (the admin's password and new_password too).
        params = super().get_post_parameters(request)
        if not params or not any(_SECRET_NAMES.search(key) for key in params):
            return params
        cleansed = params.copy()
        for key in cleansed:
            if _SECRET_NAMES.search(key):
                cleansed[key] = self.cleansed_substitute
        return cleansed

    def get_traceback_frame_variables(self, request: Any, tb_frame: Any) -> Any:
        variables = super().get_traceback_frame_variables(request, tb_frame)
        return [(name, self._cleanse_variable(name, value)) for name, value in variables]

    def _cleanse_variable(self, name: str, value: Any) -> Any:
        if isinstance(value, str) and value == self.cleansed_substitute:
            return value
        try:
            if isinstance(value, dict | list | tuple | str):
                return self.cleanse_setting(name, value)
            if _SECRET_NAMES.search(name):
                return self.cleansed_substitute
            # Objects that carry secrets in their attributes (a dataclass of credentials, an
            # account input): the page shows their repr, so mask what it reveals.
            fields = getattr(value, "__dataclass_fields__", None)
            if fields and any(_SECRET_NAMES.search(f) for f in fields):
                return self.cleansed_substitute
        except Exception:  # noqa: BLE001 (a report must never fail on a strange value)
            return self.cleansed_substitute
        return value
