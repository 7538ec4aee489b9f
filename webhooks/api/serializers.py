"""Input and output serializers of /api/webhooks/ (snake_case, like the rest of the API)."""

from __future__ import annotations

from rest_framework import serializers

from webhooks.events import EVENT_TYPES
from webhooks.models import WebhookDelivery, WebhookEndpoint

EVENT_TYPES_HELP = (
    "Event types to deliver; empty or absent: all. One of: " + ", ".join(EVENT_TYPES) + "."
)


class EndpointOutput(serializers.ModelSerializer):
    class Meta:
        model = WebhookEndpoint
        fields = [
            "id",
            "url",
            "description",
            "event_types",
            "is_active",
            "disabled_reason",
            "disabled_at",
            "failing_since",
            "retry_at",
            "last_success_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class EndpointSecretOutput(EndpointOutput):
    secret = serializers.CharField(
        help_text="The signing secret: HMAC-SHA256 key of the Webhook-Signature header."
    )

    class Meta(EndpointOutput.Meta):
        fields = [*EndpointOutput.Meta.fields, "secret"]
        read_only_fields = fields


class EndpointCreateInput(serializers.Serializer):
    url = serializers.CharField(
        max_length=2048, help_text="https:// URL that receives the POSTs.", trim_whitespace=True
    )
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=EVENT_TYPES),
        required=False,
        default=list,
        max_length=len(EVENT_TYPES),
        help_text=EVENT_TYPES_HELP,
    )
    description = serializers.CharField(max_length=255, required=False, allow_blank=True)


class EndpointUpdateInput(serializers.Serializer):
    url = serializers.CharField(max_length=2048, required=False)
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=EVENT_TYPES),
        required=False,
        max_length=len(EVENT_TYPES),
        help_text=EVENT_TYPES_HELP,
    )
    description = serializers.CharField(max_length=255, required=False, allow_blank=True)
    is_active = serializers.BooleanField(
        required=False,
        help_text="false disables the endpoint; true enables it again (a disabled endpoint's "
        "waiting deliveries are then tried at once).",
    )


class DeliveryOutput(serializers.ModelSerializer):
    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "event_id",
            "event_type",
            "status",
            "attempts",
            "response_status",
            "latency_ms",
            "error",
            "created_at",
            "last_attempt_at",
            "next_attempt_at",
            "delivered_at",
            "payload",
        ]
        read_only_fields = fields
