"""Webhook endpoints a user registers, and the log of what was delivered to them."""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q


class WebhookEndpoint(models.Model):
    """An HTTPS URL that receives the owner's change events as signed JSON POSTs.

    `cursor` is the id of the last ChangeEvent of the owner turned into deliveries: events are
    read in id order (the commit order per owner, messages.events), so none is skipped and
    none that was rolled back is ever seen. Failing deliveries are retried with backoff; an
    endpoint still failing WEBHOOK_GIVE_UP_SECONDS after its first failure is disabled with
    the reason in `disabled_reason` (its pending deliveries wait for it to be enabled again).
    """

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.URLField(max_length=2048)
    description = models.CharField(max_length=255, blank=True)
    event_types = ArrayField(
        models.CharField(max_length=32),
        default=list,
        blank=True,
        help_text="Event types to deliver (e.g. message.created); empty: all of them.",
    )
    secret_encrypted = models.BinaryField(
        editable=False, help_text="Signing secret, a Fernet token; see messages.crypto."
    )
    is_active = models.BooleanField(default=True)
    disabled_reason = models.TextField(blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    allow_internal = models.BooleanField(
        default=False,
        help_text="Registered by staff: internal addresses allowed (as for account hosts).",
    )
    cursor = models.BigIntegerField(default=0, help_text="Last change event handed on.")
    failing_since = models.DateTimeField(null=True, blank=True)
    retry_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["owner", "is_active"], name="webhook_owner_active")]

    def __str__(self) -> str:
        return self.url

    def wants(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types


class WebhookDelivery(models.Model):
    """One event for one endpoint: its payload (fixed when the event was handed on, so every
    attempt and redelivery sends the same body) and the outcome of its attempts."""

    class Status(models.TextChoices):
        PENDING = "pending"  # not yet tried
        RETRYING = "retrying"  # failed; tried again at next_attempt_at
        DELIVERED = "delivered"

    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    event_id = models.BigIntegerField(help_text="The ChangeEvent's id (the changes feed's).")
    event_type = models.CharField(max_length=32)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    first_failed_at = models.DateTimeField(
        null=True, blank=True, help_text="Start of the current run of failures."
    )
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "event_id"], name="webhook_delivery_once")
        ]
        indexes = [
            models.Index(
                fields=["endpoint", "event_id"],
                condition=~Q(status="delivered"),
                name="webhook_delivery_pending",
            ),
            models.Index(fields=["endpoint", "-id"], name="webhook_delivery_log"),
        ]
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.event_type} #{self.event_id} to endpoint {self.endpoint_id} ({self.status})"
