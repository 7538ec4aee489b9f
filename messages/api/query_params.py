"""Strict query strings: a parameter an endpoint does not take is a 400 that names it, not
ignored (a misspelt filter would otherwise return everything, silently)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rest_framework.exceptions import ValidationError
from rest_framework.request import Request

# DRF's own: `?format=json` picks the renderer on every endpoint.
ALWAYS_ALLOWED = frozenset({"format"})


def query_params_check(params: Iterable[str], allowed: Iterable[str]) -> None:
    allowed = frozenset(allowed)
    unknown = sorted(set(params) - allowed - ALWAYS_ALLOWED)
    if not unknown:
        return
    takes = ", ".join(sorted(allowed)) if allowed else "no query parameters"
    raise ValidationError(
        {name: [f"Unknown query parameter; this endpoint takes: {takes}."] for name in unknown}
    )


# A view mixin: after authentication, permissions and throttles, refuse the parameters the
# view does not take: its filters, its paginator's, its `query_serializer`'s fields and
# `extra_query_params`. (A comment, not a docstring: drf-spectacular would show a base class's
# docstring as the description of every operation that has none of its own.)
class KnownQueryParams:
    query_serializer: type | None = None
    extra_query_params: frozenset[str] = frozenset()

    def allowed_query_params(self) -> set[str]:
        names = set(self.extra_query_params)
        if self.query_serializer is not None:
            names |= set(self.query_serializer().fields)
        filterset = getattr(self, "filterset_class", None)
        if filterset is not None and getattr(self, "filter_backends", None):
            names |= set(filterset.base_filters)
        paginator = getattr(self, "paginator", None)
        if paginator is not None:
            names |= {
                getattr(paginator, attr)
                for attr in ("cursor_query_param", "page_size_query_param", "page_query_param")
                if getattr(paginator, attr, None)
            }
        return names

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
        query_params_check(request.query_params, self.allowed_query_params())
