"""Delivering change events to an endpoint: fan-out, then one pass of sends.

Fan-out (`endpoint_fan_out`) reads the owner's ChangeEvents after the endpoint's cursor, in id
order, and turns those the endpoint wants into WebhookDelivery rows in the transaction that
moves the cursor: an event is handed on exactly once, and only once committed (the feed's id
order is the owner's commit order, so an event with a smaller id never appears later).

A pass (`endpoint_deliver`) sends the due deliveries oldest event first, for at most a time
budget. A delivery succeeds on a 2xx answer. Any other outcome is retried with exponential
backoff (WEBHOOK_RETRY_BASE_SECONDS doubling up to WEBHOOK_RETRY_MAX_SECONDS, with jitter);
an endpoint that cannot be reached (refused, timed out, TLS, guard) stops the pass and waits
until the retry time before anything else is sent to it. A delivery still failing
WEBHOOK_GIVE_UP_SECONDS (a day) after its first failure disables the endpoint, with the reason.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import requests
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from emailplatform import netguard
from emailplatform.observability import metrics
from messages import crypto
from messages.models import ChangeEvent

from . import events
from .http import guarded_session
from .models import WebhookDelivery, WebhookEndpoint
from .signing import SIGNATURE_HEADER, sign

logger = logging.getLogger(__name__)

FAN_OUT_BATCH = 1000
SEND_CHUNK = 100
USER_AGENT = "emailplatform-webhooks/1"
MAX_RESPONSE_BYTES = 64 * 1024


def endpoint_fan_out(endpoint_id: int, *, limit: int = FAN_OUT_BATCH) -> int:
    """Hand the owner's new events to the endpoint; return how many events were read."""
    with transaction.atomic():
        endpoint = (
            WebhookEndpoint.objects.select_for_update()
            .filter(pk=endpoint_id, is_active=True)
            .first()
        )
        if endpoint is None:
            return 0
        read = list(
            ChangeEvent.objects.filter(owner_id=endpoint.owner_id, id__gt=endpoint.cursor).order_by(
                "id"
            )[:limit]
        )
        if not read:
            return 0
        wanted = [e for e in read if endpoint.wants(events.event_type(e))]
        found = events.objects_data(wanted)
        WebhookDelivery.objects.bulk_create(
            [
                WebhookDelivery(
                    endpoint=endpoint,
                    event_id=e.pk,
                    event_type=events.event_type(e),
                    payload=events.payload(e, events.event_data(e, found)),
                )
                for e in wanted
            ],
            ignore_conflicts=True,
        )
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(cursor=read[-1].pk)
    return len(read)


@dataclass
class Outcome:
    ok: bool
    status: int | None = None
    latency_ms: int = 0
    error: str = ""
    unreachable: bool = False  # nothing answered: stop the pass


def send(
    session: requests.Session, endpoint: WebhookEndpoint, secret: str, body: bytes, event_id: int
) -> Outcome:
    """POST one body; never raises for what the endpoint does."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Webhook-Id": str(event_id),
        SIGNATURE_HEADER: sign(secret, body),
    }
    timeout = settings.WEBHOOK_TIMEOUT_SECONDS
    started = time.perf_counter()
    try:
        response = session.post(
            endpoint.url,
            data=body,
            headers=headers,
            timeout=timeout,
            allow_redirects=False,
            stream=True,
        )
        try:
            _drain(response, started + timeout)
        finally:
            response.close()
    except netguard.GuardError as exc:
        return Outcome(False, error=str(exc), unreachable=True, latency_ms=_ms(started))
    except requests.Timeout:
        return Outcome(
            False, error=f"timed out after {timeout:g} s", unreachable=True, latency_ms=_ms(started)
        )
    except requests.exceptions.SSLError as exc:
        return Outcome(
            False, error=f"TLS failed: {_reason(exc)}", unreachable=True, latency_ms=_ms(started)
        )
    except requests.RequestException as exc:
        return Outcome(
            False,
            error=f"connection failed: {_reason(exc)}",
            unreachable=True,
            latency_ms=_ms(started),
        )
    latency = _ms(started)
    if 200 <= response.status_code < 300:
        return Outcome(True, response.status_code, latency)
    return Outcome(
        False, response.status_code, latency, f"HTTP {response.status_code} {response.reason}"[:200]
    )


def _drain(response: requests.Response, deadline: float) -> None:
    """Read and forget the answer's body, at most MAX_RESPONSE_BYTES and until DEADLINE: a
    short body read whole keeps the connection for the next delivery; a long or slow one is
    cut (the connection is dropped), never held in memory."""
    read = 0
    for chunk in response.iter_content(16384):
        read += len(chunk)
        if read > MAX_RESPONSE_BYTES or time.perf_counter() > deadline:
            return


def _ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


def _reason(exc: BaseException) -> str:
    """The innermost cause's text (urllib3 nests them), without addresses echoed twice."""
    while exc.__cause__ is not None or (exc.args and isinstance(exc.args[0], BaseException)):
        exc = exc.__cause__ or exc.args[0]
    text = str(getattr(exc, "reason", None) or exc)
    return text[:200]


def retry_delay(attempts: int) -> timedelta:
    base = settings.WEBHOOK_RETRY_BASE_SECONDS * 2 ** max(0, attempts - 1)
    delay = min(settings.WEBHOOK_RETRY_MAX_SECONDS, base)
    return timedelta(seconds=delay * random.uniform(0.9, 1.1))  # noqa: S311


@dataclass
class PassResult:
    delivered: int = 0
    failed: int = 0
    more: bool = False  # due deliveries left (the budget ran out)
    disabled: bool = False
    sent_ids: list[int] = field(default_factory=list)


def due_deliveries(endpoint: WebhookEndpoint, now: datetime, limit: int) -> list[WebhookDelivery]:
    return list(
        WebhookDelivery.objects.filter(endpoint=endpoint)
        .exclude(status=WebhookDelivery.Status.DELIVERED)  # the partial index's condition
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .order_by("event_id")[:limit]
    )


def endpoint_deliver(
    endpoint_id: int,
    *,
    budget_seconds: float | None = None,
    session: requests.Session | None = None,
) -> PassResult:
    """Fan out, then send what is due for at most BUDGET_SECONDS. The caller holds the
    endpoint's delivery lock (webhooks.dispatch)."""
    result = PassResult()
    budget = settings.WEBHOOK_PASS_SECONDS if budget_seconds is None else budget_seconds
    deadline = time.monotonic() + budget
    while endpoint_fan_out(endpoint_id) and time.monotonic() < deadline:
        pass
    endpoint = WebhookEndpoint.objects.filter(pk=endpoint_id, is_active=True).first()
    if endpoint is None:
        return result
    now = timezone.now()
    if endpoint.retry_at is not None and endpoint.retry_at > now:
        return result
    secret = endpoint_secret(endpoint)
    own_session = session is None
    session = session or guarded_session(
        allow_internal=endpoint.allow_internal, ca_certs=settings.WEBHOOK_CA_CERTS
    )
    try:
        while True:
            batch = due_deliveries(endpoint, timezone.now(), SEND_CHUNK)
            if not batch:
                return result
            done: list[WebhookDelivery] = []
            stop = False
            for delivery in batch:
                if time.monotonic() >= deadline:
                    result.more = stop = True
                    break
                body = json.dumps(delivery.payload, separators=(",", ":")).encode()
                outcome = send(session, endpoint, secret, body, delivery.event_id)
                _apply(delivery, outcome)
                done.append(delivery)
                result.sent_ids.append(delivery.pk)
                if outcome.ok:
                    result.delivered += 1
                    continue
                result.failed += 1
                if _give_up(delivery):
                    _disable(endpoint, delivery)
                    result.disabled = stop = True
                    break
                if outcome.unreachable:
                    endpoint.retry_at = delivery.next_attempt_at
                    stop = True
                    break
            _save(endpoint, done)
            if stop:
                return result
    finally:
        if own_session:
            session.close()


def _apply(delivery: WebhookDelivery, outcome: Outcome) -> None:
    now = timezone.now()
    delivery.attempts += 1
    delivery.last_attempt_at = now
    delivery.response_status = outcome.status
    delivery.latency_ms = outcome.latency_ms
    delivery.error = outcome.error
    if outcome.ok:
        delivery.status = WebhookDelivery.Status.DELIVERED
        delivery.delivered_at = now
        delivery.next_attempt_at = None
        delivery.first_failed_at = None
    else:
        delivery.status = WebhookDelivery.Status.RETRYING
        delivery.first_failed_at = delivery.first_failed_at or now
        delivery.next_attempt_at = now + retry_delay(delivery.attempts)


def _give_up(delivery: WebhookDelivery) -> bool:
    failing = timezone.now() - delivery.first_failed_at
    return failing >= timedelta(seconds=settings.WEBHOOK_GIVE_UP_SECONDS)


def _disable(endpoint: WebhookEndpoint, delivery: WebhookDelivery) -> None:
    since = delivery.first_failed_at.strftime("%Y-%m-%d %H:%M UTC")
    endpoint.is_active = False
    endpoint.disabled_at = timezone.now()
    endpoint.disabled_reason = (
        f"Disabled: deliveries failing since {since} ({delivery.attempts} attempts); "
        f"last error: {delivery.error}"
    )
    logger.warning("webhook endpoint %s disabled: %s", endpoint.pk, endpoint.disabled_reason)


_TABLE = WebhookDelivery._meta.db_table
# The outcomes of a chunk in one statement (Django's bulk_update builds a CASE per field and row:
# 20 ms a row measured, more than the POST itself).
_SAVE = f"""
    UPDATE {_TABLE} AS d
       SET status = v.status, attempts = v.attempts, last_attempt_at = v.last_attempt_at,
           next_attempt_at = v.next_attempt_at, first_failed_at = v.first_failed_at,
           response_status = v.response_status, latency_ms = v.latency_ms, error = v.error,
           delivered_at = v.delivered_at
      FROM unnest(%s::bigint[], %s::varchar[], %s::integer[], %s::timestamptz[],
                  %s::timestamptz[], %s::timestamptz[], %s::smallint[], %s::integer[],
                  %s::text[], %s::timestamptz[])
           AS v(id, status, attempts, last_attempt_at, next_attempt_at, first_failed_at,
                response_status, latency_ms, error, delivered_at)
     WHERE d.id = v.id
"""
_COLUMNS = (
    "pk",
    "status",
    "attempts",
    "last_attempt_at",
    "next_attempt_at",
    "first_failed_at",
    "response_status",
    "latency_ms",
    "error",
    "delivered_at",
)


def _measure(done: list[WebhookDelivery], *, disabled: bool) -> None:
    """Each attempt for /metrics (webhook_deliveries_total, webhook_delivery_seconds)."""
    for n, delivery in enumerate(done, 1):
        if delivery.status == WebhookDelivery.Status.DELIVERED:
            outcome = "delivered"
        else:
            outcome = "disabled" if disabled and n == len(done) else "failed"
        metrics.webhook_delivery(outcome=outcome, seconds=delivery.latency_ms / 1000)


def _deliveries_save(done: list[WebhookDelivery]) -> None:
    columns = [[getattr(d, name) for d in done] for name in _COLUMNS]
    with connection.cursor() as cursor:
        cursor.execute(_SAVE, columns)


def _save(endpoint: WebhookEndpoint, done: list[WebhookDelivery]) -> None:
    now = timezone.now()
    succeeded = any(d.status == WebhookDelivery.Status.DELIVERED for d in done)
    failed = any(d.status != WebhookDelivery.Status.DELIVERED for d in done)
    changes: dict = {}
    if succeeded:
        changes["last_success_at"] = now
    if failed:
        changes["failing_since"] = endpoint.failing_since or now
    elif succeeded:
        changes["failing_since"] = None
    changes["retry_at"] = endpoint.retry_at
    if not endpoint.is_active:
        changes.update(
            is_active=False,
            disabled_at=endpoint.disabled_at,
            disabled_reason=endpoint.disabled_reason,
        )
    with transaction.atomic():
        _deliveries_save(done)
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(**changes, updated_at=now)
    _measure(done, disabled=not endpoint.is_active)
    endpoint.failing_since = changes.get("failing_since", endpoint.failing_since)


def endpoint_secret(endpoint: WebhookEndpoint) -> str:
    return crypto.decrypt_json(bytes(endpoint.secret_encrypted))["secret"]


def endpoints_due() -> list[int]:
    """Active endpoints with something to do now: events past their cursor, or deliveries
    whose retry time has come (beat's sweep enqueues a pass for each)."""
    now = timezone.now()
    newer_events = ChangeEvent.objects.filter(
        owner_id=OuterRef("owner_id"), id__gt=OuterRef("cursor")
    )
    due = (
        WebhookDelivery.objects.filter(endpoint_id=OuterRef("pk"))
        .exclude(status=WebhookDelivery.Status.DELIVERED)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
    )
    return list(
        WebhookEndpoint.objects.filter(is_active=True)
        .filter(Q(retry_at__isnull=True) | Q(retry_at__lte=now))
        .filter(Exists(newer_events) | Exists(due))
        .values_list("pk", flat=True)
    )
