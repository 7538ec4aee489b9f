"""/api/webhooks/: the owner's endpoints, their delivery logs, redelivery. Thin, like the
other API views (messages.api.views): validate, call webhooks.services, shape the output."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from messages.api.errors import ErrorResponse
from messages.api.views import ApiView, ListView, _found, _validated
from webhooks import selectors, services
from webhooks.delivery import endpoint_secret
from webhooks.models import WebhookDelivery, WebhookEndpoint

from . import serializers as s
from .filters import DeliveryFilter

TAGS = ["webhooks"]
REFUSED = OpenApiResponse(
    ErrorResponse,
    description="Invalid input: a URL the platform may not POST to (not https, an internal "
    "address, a host that does not resolve), an unknown event type. error.fields says which.",
)
SIGNING = (
    "Every delivery is a POST of JSON `{id, type, created_at, account_id, data}` with the "
    'header `Webhook-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the '
    "secret>` and `Webhook-Id: <event id>` (the changes feed's id: deliveries are at least "
    "once, deduplicate on it). See the README, Webhooks."
)


def _endpoint(request: Request, pk: int) -> WebhookEndpoint:
    return _found(selectors.endpoint_get(user=request.user, endpoint_id=pk))


def _with_secret(endpoint: WebhookEndpoint, secret: str | None = None) -> dict:
    endpoint.secret = secret or endpoint_secret(endpoint)
    return s.EndpointSecretOutput(endpoint).data


class EndpointListView(ListView):
    ordering = ("-id",)
    output_serializer = s.EndpointOutput
    filter_backends: list = []

    def get_queryset(self) -> QuerySet[WebhookEndpoint]:
        return selectors.endpoint_list(user=self.request.user)

    @extend_schema(tags=TAGS, responses=s.EndpointOutput(many=True), summary="Your endpoints")
    def get(self, request: Request) -> Response:
        return self.list(request)

    @extend_schema(
        tags=TAGS,
        request=s.EndpointCreateInput,
        responses={201: s.EndpointSecretOutput, 400: REFUSED},
        summary="Register an endpoint (the answer carries its signing secret)",
        description="It receives the events that commit from now on. " + SIGNING,
    )
    def post(self, request: Request) -> Response:
        data = _validated(s.EndpointCreateInput, request.data)
        endpoint, secret = services.endpoint_create(owner=request.user, **data)
        return Response(_with_secret(endpoint, secret), status=status.HTTP_201_CREATED)


class EndpointDetailView(ApiView):
    @extend_schema(tags=TAGS, responses=s.EndpointSecretOutput, summary="An endpoint")
    def get(self, request: Request, pk: int) -> Response:
        return Response(_with_secret(_endpoint(request, pk)))

    @extend_schema(
        tags=TAGS,
        request=s.EndpointUpdateInput,
        responses={200: s.EndpointSecretOutput, 400: REFUSED},
        summary="Change an endpoint; is_active: true enables a disabled one again",
    )
    def patch(self, request: Request, pk: int) -> Response:
        endpoint = _endpoint(request, pk)
        data = _validated(s.EndpointUpdateInput, request.data)
        services.endpoint_update(endpoint=endpoint, data=data, user=request.user)
        return Response(_with_secret(endpoint))

    @extend_schema(tags=TAGS, responses={204: None}, summary="Delete an endpoint and its log")
    def delete(self, request: Request, pk: int) -> Response:
        services.endpoint_delete(endpoint=_endpoint(request, pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class EndpointRotateSecretView(ApiView):
    @extend_schema(
        tags=TAGS,
        request=None,
        responses=s.EndpointSecretOutput,
        summary="A new signing secret (the old one stops at once)",
    )
    def post(self, request: Request, pk: int) -> Response:
        endpoint = _endpoint(request, pk)
        secret = services.endpoint_rotate_secret(endpoint=endpoint)
        return Response(_with_secret(endpoint, secret))


class DeliveryListView(ListView):
    ordering = ("-id",)
    output_serializer = s.DeliveryOutput
    filterset_class = DeliveryFilter

    def get_queryset(self) -> QuerySet[WebhookDelivery]:
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular reading the view
            return WebhookDelivery.objects.none()
        return selectors.delivery_list(endpoint=_endpoint(self.request, self.kwargs["pk"]))

    @extend_schema(
        tags=TAGS,
        responses=s.DeliveryOutput(many=True),
        summary="The endpoint's delivery log, newest first: status, attempts, latency",
    )
    def get(self, request: Request, pk: int) -> Response:
        return self.list(request)


class DeliveryRedeliverView(ApiView):
    @extend_schema(
        tags=TAGS,
        request=None,
        responses={202: s.DeliveryOutput},
        summary="Send a delivery again (same body, new signature), even a delivered one",
    )
    def post(self, request: Request, pk: int, delivery_pk: int) -> Response:
        endpoint = _endpoint(request, pk)
        delivery = _found(selectors.delivery_get(endpoint=endpoint, delivery_id=delivery_pk))
        services.deliveries_redeliver(deliveries=[delivery])
        delivery.refresh_from_db()
        return Response(s.DeliveryOutput(delivery).data, status=status.HTTP_202_ACCEPTED)
