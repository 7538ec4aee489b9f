"""Reads of the webhooks app, scoped to one owner (another user's endpoint is not found)."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from .models import WebhookDelivery, WebhookEndpoint

User = AbstractBaseUser | AnonymousUser


def endpoint_list(*, user: User) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(owner_id=user.pk)


def endpoint_get(*, user: User, endpoint_id: int) -> WebhookEndpoint | None:
    return endpoint_list(user=user).filter(pk=endpoint_id).first()


def delivery_list(*, endpoint: WebhookEndpoint) -> QuerySet[WebhookDelivery]:
    return WebhookDelivery.objects.filter(endpoint=endpoint)


def delivery_get(*, endpoint: WebhookEndpoint, delivery_id: int) -> WebhookDelivery | None:
    return delivery_list(endpoint=endpoint).filter(pk=delivery_id).first()
