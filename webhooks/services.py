"""Writes of the webhooks app: registering, changing, enabling endpoints; redelivery."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from emailplatform import netguard
from messages import crypto
from messages.models import ChangeEvent

from . import dispatch
from .events import EVENT_TYPES
from .models import WebhookDelivery, WebhookEndpoint
from .signing import new_secret


def may_reach_internal(user: AbstractBaseUser | None) -> bool:
    """As for account hosts: staff only, while OUTBOUND_STAFF_ALLOW_INTERNAL is on."""
    return bool(
        user is not None
        and getattr(user, "is_active", False)
        and getattr(user, "is_staff", False)
        and settings.OUTBOUND_STAFF_ALLOW_INTERNAL
    )


def url_check(url: str, *, allow_internal: bool = False) -> str:
    """The URL if the platform may POST to it, else ValidationError with a reason to show:
    https (http only to hosts on OUTBOUND_ALLOWED_NETWORKS), no user:password part, a host
    that resolves to addresses the outbound guard allows."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("https", "http"):
        raise ValidationError("Enter an https:// URL.")
    if parts.username is not None or parts.password is not None:
        raise ValidationError("A webhook URL cannot carry a user name or password.")
    if parts.fragment:
        raise ValidationError("A webhook URL cannot have a #fragment.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ValidationError("The URL's port is not a number from 1 to 65535.") from None
    if not parts.hostname:
        raise ValidationError("The URL has no host.")
    try:
        netguard.resolve(
            parts.hostname,
            port,
            policy=netguard.policy_for(allow_internal),
            plaintext=parts.scheme == "http",
        )
    except netguard.AddressRefused as exc:
        if exc.kind == "plaintext":
            raise ValidationError(
                "Enter an https:// URL (plain http is for hosts on the operator's allow list)."
            ) from None
        raise ValidationError(str(exc)) from None
    except netguard.GuardError as exc:
        raise ValidationError(str(exc)) from None
    return url.strip()


def event_types_check(types: Iterable[str]) -> list[str]:
    unknown = sorted(set(types) - set(EVENT_TYPES))
    if unknown:
        raise ValidationError(f"Unknown event types: {', '.join(unknown)}.")
    return sorted(set(types), key=EVENT_TYPES.index)


def _field(name: str, check: Any, *args: Any, **kwargs: Any) -> Any:
    """CHECK's result, its ValidationError naming the field NAME."""
    try:
        return check(*args, **kwargs)
    except ValidationError as exc:
        raise ValidationError({name: exc.messages}) from None


def _encrypt(secret: str) -> bytes:
    return crypto.encrypt_json({"secret": secret})


def endpoint_create(
    *,
    owner: AbstractBaseUser,
    url: str,
    event_types: Iterable[str] = (),
    description: str = "",
    created_by: AbstractBaseUser | None = None,
) -> tuple[WebhookEndpoint, str]:
    """Register an endpoint; return it and its signing secret. It receives the events that
    commit from now on."""
    allow_internal = may_reach_internal(created_by or owner)
    url = _field("url", url_check, url, allow_internal=allow_internal)
    types = _field("event_types", event_types_check, event_types)
    if WebhookEndpoint.objects.filter(owner=owner).count() >= settings.WEBHOOK_MAX_ENDPOINTS:
        raise ValidationError(f"At most {settings.WEBHOOK_MAX_ENDPOINTS} webhook endpoints a user.")
    secret = new_secret()
    cursor = ChangeEvent.objects.filter(owner=owner).aggregate(m=Max("id"))["m"] or 0
    endpoint = WebhookEndpoint.objects.create(
        owner=owner,
        url=url,
        event_types=types,
        description=description,
        secret_encrypted=_encrypt(secret),
        allow_internal=allow_internal,
        cursor=cursor,
    )
    transaction.on_commit(dispatch.forget_endpoints)
    return endpoint, secret


def endpoint_update(
    *, endpoint: WebhookEndpoint, data: dict[str, Any], user: AbstractBaseUser | None = None
) -> WebhookEndpoint:
    """Change url, event_types, description; `is_active: true` re-enables a disabled endpoint
    (its waiting deliveries are tried at once, with a new day of retries)."""
    if "url" in data:
        endpoint.allow_internal = may_reach_internal(user or endpoint.owner)
        endpoint.url = _field("url", url_check, data["url"], allow_internal=endpoint.allow_internal)
    if "event_types" in data:
        endpoint.event_types = _field("event_types", event_types_check, data["event_types"])
    if "description" in data:
        endpoint.description = data["description"]
    with transaction.atomic():
        if "is_active" in data and data["is_active"] != endpoint.is_active:
            if data["is_active"]:
                _enable(endpoint)
            else:
                endpoint.is_active = False
                endpoint.disabled_at = timezone.now()
                endpoint.disabled_reason = "Disabled by its owner."
        endpoint.save()
    transaction.on_commit(dispatch.forget_endpoints)
    if endpoint.is_active:
        transaction.on_commit(lambda: dispatch.pass_enqueue(endpoint.pk))
    return endpoint


def _enable(endpoint: WebhookEndpoint) -> None:
    endpoint.is_active = True
    endpoint.disabled_at = None
    endpoint.disabled_reason = ""
    endpoint.retry_at = None
    endpoint.failing_since = None
    WebhookDelivery.objects.filter(
        endpoint=endpoint, status=WebhookDelivery.Status.RETRYING
    ).update(next_attempt_at=None, first_failed_at=None)


def endpoint_rotate_secret(*, endpoint: WebhookEndpoint) -> str:
    secret = new_secret()
    endpoint.secret_encrypted = _encrypt(secret)
    endpoint.save(update_fields=["secret_encrypted", "updated_at"])
    return secret


def endpoint_delete(*, endpoint: WebhookEndpoint) -> None:
    endpoint.delete()
    transaction.on_commit(dispatch.forget_endpoints)


def deliveries_redeliver(*, deliveries: Iterable[WebhookDelivery]) -> int:
    """Send these deliveries again as soon as possible (same event, same body, a new
    signature), whatever their status; their endpoints' backoff is lifted."""
    ids = [d.pk for d in deliveries]
    with transaction.atomic():
        changed = WebhookDelivery.objects.filter(pk__in=ids).update(
            status=WebhookDelivery.Status.PENDING, next_attempt_at=None, first_failed_at=None
        )
        endpoint_ids = set(
            WebhookDelivery.objects.filter(pk__in=ids).values_list("endpoint_id", flat=True)
        )
        WebhookEndpoint.objects.filter(pk__in=endpoint_ids).update(retry_at=None)
    for pk in endpoint_ids:
        transaction.on_commit(lambda pk=pk: dispatch.pass_enqueue(pk))
    return changed
