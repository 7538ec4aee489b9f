"""`/metrics` for Prometheus, open to a bearer token or to listed client networks only."""

from __future__ import annotations

import hmac
from functools import lru_cache

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from .collector import PlatformCollector
from .networks import address_in, parse_networks


@lru_cache(maxsize=1)
def _registry() -> CollectorRegistry:
    # Its own registry: the web process's own default series (GC, process) would describe one
    # gunicorn worker of many, picked by whichever took the scrape.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PlatformCollector())
    return registry


def client_address(request: HttpRequest) -> str:
    """REMOTE_ADDR, or behind NUM_PROXIES proxies the address the outermost one saw."""
    proxies = settings.REST_FRAMEWORK.get("NUM_PROXIES") or 0
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if proxies and forwarded:
        hops = [hop.strip() for hop in forwarded.split(",")]
        return hops[-min(proxies, len(hops))]
    return request.META.get("REMOTE_ADDR", "")


def _from_allowed_network(request: HttpRequest) -> bool:
    networks = parse_networks(tuple(settings.METRICS_ALLOWED_NETWORKS))
    return address_in(client_address(request), networks)


def _has_token(request: HttpRequest) -> bool:
    expected = settings.METRICS_TOKEN
    scheme, _, given = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    return (
        bool(expected)
        and scheme.lower() == "bearer"
        and hmac.compare_digest(given.strip().encode(), expected.encode())
    )


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not (_has_token(request) or _from_allowed_network(request)):
        if settings.METRICS_TOKEN:
            response = HttpResponse(
                "a valid bearer token is needed\n", status=401, content_type="text/plain"
            )
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
        reason = (
            "this address is not in METRICS_ALLOWED_NETWORKS\n"
            if settings.METRICS_ALLOWED_NETWORKS
            else "metrics are off: set METRICS_TOKEN or METRICS_ALLOWED_NETWORKS\n"
        )
        return HttpResponse(reason, status=403, content_type="text/plain")
    return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)
