from __future__ import annotations

import django_filters

from messages.api.filters import ChoiceFilter
from webhooks.models import WebhookDelivery


class DeliveryFilter(django_filters.FilterSet):
    status = ChoiceFilter(choices=WebhookDelivery.Status.choices)
    event_type = django_filters.CharFilter()

    class Meta:
        model = WebhookDelivery
        fields: list[str] = []
