"""The outbox's endpoints: thin, like the others (messages.api.views): validate, call the
outbox service (messages.outbox), shape the output. Another user's outbound message is a 404.

Composing and sending count against the `send` throttle (a batch of N as N requests); reads,
draft edits and cancels only against the user's general budget.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from messages import outbox, outbox_batch, selectors
from messages.models import OutboundMessage

from . import outbox_serializers as s
from .errors import ErrorResponse
from .filters import OutboundFilter
from .throttling import SendThrottle, UserThrottle
from .views import ApiView, ListView, _found, _validated

REFUSED = OpenApiResponse(
    ErrorResponse,
    description="Refused, nothing queued: error.code says why (invalid_address, "
    "header_injection, no_recipients, too_large, cannot_send, ...), error.fields where.",
)
NOT_NOW = OpenApiResponse(
    ErrorResponse,
    description="Not in this state: not a draft any more, already being sent (too_late), "
    "or the account does not send now (account_paused, account_auth_error, ...).",
)
NOT_FOUND = OpenApiResponse(
    ErrorResponse, description="No such object among yours (the account or a message named)."
)


def _outbound(request: Request, pk: int) -> OutboundMessage:
    return _found(selectors.outbound_get(user=request.user, outbound_id=pk))


def _detail(request: Request, pk: int) -> dict:
    return s.OutboundDetailOutput(_outbound(request, pk)).data


class OutboundListView(ListView):
    ordering = ("-id",)
    filterset_class = OutboundFilter
    output_serializer = s.OutboundOutput
    throttle_classes = [UserThrottle, SendThrottle]

    def get_queryset(self) -> QuerySet[OutboundMessage]:
        return selectors.outbound_list(user=self.request.user)

    @extend_schema(
        tags=["outbox"],
        responses=s.OutboundOutput(many=True),
        summary="Outbound mail, newest first",
    )
    def get(self, request: Request) -> Response:
        return self.list(request)

    @extend_schema(
        tags=["outbox"],
        request=s.OutboundCreateInput,
        responses={201: s.OutboundDetailOutput, 400: REFUSED, 404: NOT_FOUND, 409: NOT_NOW},
        summary="Compose: a draft, or send at once (send: true), now or at send_at",
        description=(
            "The Message-ID is fixed now. With send: true the message is checked, built and "
            "queued in this call (201 with state queued), and sent by a worker; nothing is "
            "stored when it is refused."
        ),
    )
    def post(self, request: Request) -> Response:
        data = _validated(s.OutboundCreateInput, request.data)
        created = outbox.outbound_create(user=request.user, data=data)
        return Response(_detail(request, created.pk), status=status.HTTP_201_CREATED)


class OutboundBatchView(ApiView):
    throttle_classes = [UserThrottle, SendThrottle]

    def throttle_cost(self, request: Request) -> int:
        """Each message of the batch counts against the `send` rate, as a POST of its own
        would (a body that is no batch counts once; it is refused anyway)."""
        data: Any = request.data
        items = data.get("messages") if isinstance(data, dict) else None
        if not isinstance(items, list):
            return 1
        return min(max(len(items), 1), settings.OUTBOX_BATCH_MAX)

    @extend_schema(
        tags=["outbox"],
        request=s.OutboundBatchInput,
        responses={201: s.OutboundBatchOutput, 400: REFUSED, 404: NOT_FOUND, 409: NOT_NOW},
        summary="Compose many at once (drafts, sent now or at send_at): all or nothing",
        description=(
            "Each item is what POST /api/outbound/ takes, checked the same way. When one is "
            "refused nothing is stored or queued, and the error names the item in its field "
            "path (messages.3.to.0.address). Each item counts against the send rate. The "
            "answer lists the messages as GET /api/outbound/ does (recipients and attachments "
            "in GET /api/outbound/{id}/)."
        ),
    )
    def post(self, request: Request) -> Response:
        data = _validated(s.OutboundBatchInput, request.data)
        created = outbox_batch.outbound_create_many(user=request.user, items=data["messages"])
        # The rows as stored, from memory: no query per message to answer.
        body = {"messages": s.OutboundOutput(created, many=True).data}
        return Response(body, status=status.HTTP_201_CREATED)


class OutboundDetailView(ApiView):
    @extend_schema(
        tags=["outbox"],
        responses=s.OutboundDetailOutput,
        summary="An outbound message: recipients with their status, delivery reports",
    )
    def get(self, request: Request, pk: int) -> Response:
        return Response(_detail(request, pk))

    @extend_schema(
        tags=["outbox"],
        request=s.OutboundUpdateInput,
        responses={200: s.OutboundDetailOutput, 400: REFUSED, 409: NOT_NOW},
        summary="Change a draft",
    )
    def patch(self, request: Request, pk: int) -> Response:
        outbound = _outbound(request, pk)
        data = _validated(s.OutboundUpdateInput, request.data)
        outbox.outbound_update(outbound=outbound, data=data)
        return Response(_detail(request, pk))

    @extend_schema(
        tags=["outbox"],
        responses={204: None, 409: NOT_NOW},
        summary="Delete a draft, or a cancelled, failed or sent message (409 while queued)",
    )
    def delete(self, request: Request, pk: int) -> Response:
        outbox.outbound_delete(outbound=_outbound(request, pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class OutboundSendView(ApiView):
    throttle_classes = [UserThrottle, SendThrottle]

    @extend_schema(
        tags=["outbox"],
        request=s.OutboundSendInput,
        responses={202: s.OutboundDetailOutput, 400: REFUSED, 409: NOT_NOW},
        summary="Send a draft now, or at send_at",
    )
    def post(self, request: Request, pk: int) -> Response:
        outbound = _outbound(request, pk)
        data = _validated(s.OutboundSendInput, request.data)
        outbox.outbound_send(outbound=outbound, send_at=data.get("send_at"))
        return Response(_detail(request, pk), status=status.HTTP_202_ACCEPTED)


class OutboundCancelView(ApiView):
    throttle_classes = [UserThrottle]

    @extend_schema(
        tags=["outbox"],
        request=None,
        responses={200: s.OutboundDetailOutput, 409: NOT_NOW},
        summary="Cancel a draft or a queued message (409 once a worker is sending it)",
    )
    def post(self, request: Request, pk: int) -> Response:
        outbox.outbound_cancel_request(outbound=_outbound(request, pk))
        return Response(_detail(request, pk))


class OutboundAttachmentView(ApiView):
    parser_classes = [MultiPartParser]
    throttle_classes = [UserThrottle, SendThrottle]

    @extend_schema(
        tags=["outbox"],
        request={"multipart/form-data": s.AttachmentUploadInput},
        responses={201: s.OutboundAttachmentOutput, 400: REFUSED, 409: NOT_NOW},
        summary="Attach a file to a draft",
    )
    def post(self, request: Request, pk: int) -> Response:
        outbound = _outbound(request, pk)
        data = _validated(s.AttachmentUploadInput, request.data)
        upload = data["file"]
        attachment = outbox.outbound_attachment_add(
            outbound=outbound,
            upload=upload,
            filename=data.get("filename") or upload.name or "",
            content_type=upload.content_type or "",
        )
        return Response(s.OutboundAttachmentOutput(attachment).data, status=status.HTTP_201_CREATED)


class OutboundAttachmentDetailView(ApiView):
    throttle_classes = [UserThrottle]

    @extend_schema(
        tags=["outbox"],
        responses={204: None, 404: NOT_FOUND, 409: NOT_NOW},
        summary="Take a file off a draft",
    )
    def delete(self, request: Request, pk: int, attachment: int) -> Response:
        outbox.outbound_attachment_remove(outbound=_outbound(request, pk), attachment_id=attachment)
        return Response(status=status.HTTP_204_NO_CONTENT)
