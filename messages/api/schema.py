"""OpenAPI: every operation documents the errors it can answer, in the API's error shape."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from rest_framework.permissions import AllowAny

from .errors import ErrorResponse

# The largest id PostgreSQL's bigint holds; path and query ids are bounded by it.
MAX_ID = 2**63 - 1


class ApiAutoSchema(AutoSchema):
    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        for code, description in self._error_statuses():
            if code not in responses:
                response = self._get_response_for_code(ErrorResponse, code, direction=direction)
                response["description"] = description
                responses[code] = response
        return responses

    def _error_statuses(self) -> list[tuple[str, str]]:
        statuses = [("400", "Invalid input (see error.fields) or query parameter.")]
        if not any(isinstance(p, AllowAny) for p in self.view.get_permissions()):
            statuses += [
                ("401", "Not authenticated: no or an invalid token."),
                ("403", "Not allowed (e.g. a session request without its CSRF token)."),
            ]
        if "{" in self.path:
            statuses.append(("404", "No such object among yours."))
        if self.method in ("POST", "PUT", "PATCH"):
            statuses.append(("415", "Unsupported request content type."))
        statuses.append(("429", "Too many requests (or failed logins): retry after Retry-After."))
        return statuses


class TokenScheme(OpenApiAuthenticationExtension):
    """The API token (messages.api.auth, django-rest-knox) in the schema."""

    target_class = "messages.api.auth.TokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": 'From POST /api/auth/token/, sent as "Token <token>".',
        }
