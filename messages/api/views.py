"""Thin views: validate with an input serializer, call a selector or a service, shape the output.

Every object is looked up among the requesting user's own (messages.selectors): another
user's object is a 404, whoever asks (staff included).
"""

from __future__ import annotations

from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

from django.conf import settings
from django.contrib.auth import authenticate, user_logged_in
from django.db.models import QuerySet
from django.http import FileResponse, HttpResponse, StreamingHttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_variables
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from knox.models import AuthToken
from rest_framework import status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.generics import GenericAPIView
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from emailplatform.object_storage import open_for_download
from messages import providers, selectors, services
from messages.message_page import ORDER_FIELDS, message_page
from messages.mime import decode_words, fix_text
from messages.models import Account, Folder, Message, Thread
from messages.sanitize import sanitize_mail_html

from . import serializers as s
from .errors import ErrorResponse
from .filters import FolderFilter, MessageFilter, ThreadFilter, message_query
from .pagination import KeysetCursorPagination
from .parsers import JSONParser
from .query_params import KnownQueryParams
from .throttling import (
    AccountCreateThrottle,
    AnonThrottle,
    LoginLockedOut,
    SyncThrottle,
    TestConnectionThrottle,
    UserThrottle,
    lockout_seconds,
)

# Secrets a request may carry: hidden from error reports (with DEBUG on too). JSON bodies are
# never in request.POST, so the frames' variables are what needs hiding (and the report filter,
# messages.api.errors.SafeExceptionReporterFilter, masks any dict's "password" as well).
SECRET_FIELDS = ("password", "oauth2_token")
hide_secrets = method_decorator(sensitive_variables("data", "password", "oauth2_token"))

CONFLICT = OpenApiResponse(ErrorResponse, description="Not possible in the object's state.")
PROVIDER_REFUSED = OpenApiResponse(
    ErrorResponse,
    description=(
        "Invalid input, or the provider refused: error.code is connection_failed or "
        "auth_failed, error.message the server's reason."
    ),
)


def _validated(serializer_class: type, data: Any, **kwargs: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _found(obj: Any) -> Any:
    if obj is None:
        raise NotFound()
    return obj


# The API's views: strict about their query strings (see KnownQueryParams).
class ApiView(KnownQueryParams, APIView):
    pass


# A paginated, filtered list; subclasses name the selector, the filters and the output.
class ListView(KnownQueryParams, GenericAPIView):
    pagination_class = KeysetCursorPagination
    filter_backends = [DjangoFilterBackend]
    output_serializer: type

    def list(self, request: Request) -> Response:
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        data = self.output_serializer(page, many=True, context={"request": request}).data
        return self.get_paginated_response(data)


# Index -------------------------------------------------------------------------------------
API_INDEX = {
    "token": "api:token",
    "accounts": "api:account-list",
    "folders": "api:folder-list",
    "threads": "api:thread-list",
    "messages": "api:message-list",
    "outbound": "api:outbound-list",
    "changes": "api:changes",
    "webhooks": "webhooks-api:endpoint-list",
    "schema": "schema",
    "docs": "docs",
}


class ApiIndexView(ApiView):
    """What a newcomer finds at /api/: the endpoints, and where they are documented."""

    permission_classes = [AllowAny]
    throttle_classes = [AnonThrottle]

    @extend_schema(exclude=True)
    def get(self, request: Request) -> Response:
        return Response(
            {name: request.build_absolute_uri(reverse(url)) for name, url in API_INDEX.items()}
        )


# Authentication ----------------------------------------------------------------------------
class TokenView(ApiView):
    """A new token per login (django-rest-knox: stored as a digest, with an expiry).

    Wrong passwords count per (username, client address); at AXES_FAILURE_LIMIT the pair is
    locked out for the cool-off (429 with Retry-After), whatever password it sends.
    """

    permission_classes = [AllowAny]
    authentication_classes: list = []
    throttle_classes = [AnonThrottle]
    # `curl -d` (urlencoded) and `curl -F` (multipart) work as well as a JSON body.
    parser_classes = [JSONParser, FormParser, MultiPartParser]

    @extend_schema(
        tags=["auth"],
        request=s.TokenInput,
        responses={200: s.TokenOutput},
        summary="Exchange a username and password for an API token",
        description=(
            "Each call issues a new token, valid until `expiry`. After too many wrong "
            "passwords for a username from one address, logins are refused with 429 and "
            "Retry-After."
        ),
        auth=[],
    )
    @hide_secrets
    def post(self, request: Request) -> Response:
        data = _validated(s.TokenInput, request.data)
        # Django's own request: django-axes marks it when the login is locked out.
        http_request = request._request
        user = authenticate(http_request, username=data["username"], password=data["password"])
        if getattr(http_request, "axes_locked_out", False):
            raise LoginLockedOut(wait=lockout_seconds(http_request))
        if user is None or not user.is_active:
            raise ValidationError(
                {"non_field_errors": ["Unable to log in with the username and password given."]}
            )
        user_logged_in.send(sender=user.__class__, request=http_request, user=user)
        _prune_tokens(user)
        token, key = AuthToken.objects.create(user)
        return Response({"token": key, "expiry": token.expiry})


def _prune_tokens(user: Any) -> None:
    """Expired tokens go; beyond API_TOKENS_PER_USER - 1 live ones, the oldest go."""
    AuthToken.objects.filter(user=user, expiry__lt=timezone.now()).delete()
    keep = max(settings.API_TOKENS_PER_USER - 1, 0)
    stale = (
        AuthToken.objects.filter(user=user).order_by("-created").values_list("pk", flat=True)[keep:]
    )
    AuthToken.objects.filter(pk__in=list(stale)).delete()


# Accounts ----------------------------------------------------------------------------------
class AccountListView(ListView):
    ordering = ("id",)
    filter_backends: list = []
    output_serializer = s.AccountOutput
    # Creating an account logs in to the provider first: its own, strict budget.
    throttle_classes = [UserThrottle, AccountCreateThrottle]

    def get_queryset(self) -> QuerySet[Account]:
        return selectors.account_list(user=self.request.user)

    @extend_schema(tags=["accounts"], responses=s.AccountOutput(many=True), summary="Accounts")
    def get(self, request: Request) -> Response:
        return self.list(request)

    @extend_schema(
        tags=["accounts"],
        request=s.account_create_request(),
        responses={201: s.AccountOutput, 400: PROVIDER_REFUSED},
        summary="Add an account (its connection is tested first)",
        description=(
            "The body's `settings` depend on the provider; password and oauth2_token are "
            "write-only. A first full sync starts once the account is stored."
        ),
    )
    @hide_secrets
    def post(self, request: Request) -> Response:
        provider = _validated(s.ProviderChoice, request.data)["provider"]
        data = _validated(s.account_create_input(provider), request.data)
        account = services.account_create(owner=request.user, provider=provider, data=data)
        account = selectors.account_get(user=request.user, account_id=account.pk)
        return Response(s.AccountOutput(account).data, status=status.HTTP_201_CREATED)


class AccountAuthorizeView(ApiView):
    # Starting a connection is the first half of creating an account: the same budget.
    throttle_classes = [UserThrottle, AccountCreateThrottle]

    @extend_schema(
        tags=["accounts"],
        request=None,
        responses={
            200: s.AuthorizationStarted,
            400: PROVIDER_REFUSED,
            404: OpenApiResponse(
                ErrorResponse, description="No such provider, or it has no consent screen."
            ),
        },
        summary="Connect an account on the provider's consent screen (Gmail)",
        description=(
            "Answers the URL of the provider's consent screen for the requesting user. Once "
            "the user consents, the provider sends the browser back to this platform, which "
            "stores the account (or reconnects the user's account of that address) and starts "
            "its sync; the account then shows in GET /api/accounts/."
        ),
    )
    def post(self, request: Request, provider: str) -> Response:
        try:
            url = providers.authorization_start(provider, request.user, request._request)
        except providers.UnknownProvider:
            raise NotFound(f"No provider named {provider!r}.") from None
        if url is None:
            raise NotFound(f"{provider} accounts are not connected on a consent screen.")
        return Response({"authorization_url": url})


class AccountDetailView(ApiView):
    # A new password is tried on the provider before it is stored: like a connection test.
    throttle_classes = [UserThrottle, TestConnectionThrottle]

    @staticmethod
    def throttle_applies(request: Request) -> bool:
        return (
            request.method == "PATCH"
            and isinstance(request.data, dict)
            and any(name in request.data for name in SECRET_FIELDS)
        )

    def _account(self, request: Request, pk: int) -> Account:
        return _found(selectors.account_get(user=request.user, account_id=pk))

    @extend_schema(tags=["accounts"], responses=s.AccountOutput, summary="An account")
    def get(self, request: Request, pk: int) -> Response:
        return Response(s.AccountOutput(self._account(request, pk)).data)

    @extend_schema(
        tags=["accounts"],
        request=s.AccountUpdateInput,
        responses={200: s.AccountOutput, 400: PROVIDER_REFUSED, 409: CONFLICT},
        summary="Change an account's name, sync settings or password",
    )
    @hide_secrets
    def patch(self, request: Request, pk: int) -> Response:
        account = self._account(request, pk)
        data = _validated(s.AccountUpdateInput, request.data)
        services.account_update(account=account, **data)
        return Response(s.AccountOutput(self._account(request, pk)).data)

    @extend_schema(
        tags=["accounts"],
        request=None,
        responses={202: s.AccountDeletion},
        summary="Delete an account and its mail (in the background)",
        description="The account shows status `deleting` until it is gone.",
    )
    def delete(self, request: Request, pk: int) -> Response:
        account = self._account(request, pk)
        services.account_delete_request(account=account)
        return Response(
            {"id": account.pk, "status": account.status}, status=status.HTTP_202_ACCEPTED
        )


class AccountSyncView(ApiView):
    throttle_classes = [UserThrottle, SyncThrottle]

    @extend_schema(
        tags=["accounts"],
        request=s.SyncInput,
        responses={202: s.SyncQueued, 409: CONFLICT},
        summary="Sync now: full or incremental",
    )
    def post(self, request: Request, pk: int) -> Response:
        account = _found(selectors.account_get(user=request.user, account_id=pk))
        full = _validated(s.SyncInput, request.data)["full"]
        services.account_sync_request(account=account, full=full)
        return Response({"queued": True, "full": full}, status=status.HTTP_202_ACCEPTED)


class AccountTestConnectionView(ApiView):
    throttle_classes = [UserThrottle, TestConnectionThrottle]

    @extend_schema(
        tags=["accounts"],
        request=None,
        responses={200: s.ConnectionOk, 400: PROVIDER_REFUSED},
        summary="Log in to the provider with the stored settings",
    )
    def post(self, request: Request, pk: int) -> Response:
        account = _found(selectors.account_get(user=request.user, account_id=pk))
        try:
            adapter = providers.get_adapter(account.provider)
        except providers.UnknownProvider:
            raise NotFound("This account's provider is not available here.") from None
        adapter.test_connection(account)
        return Response({"ok": True})


# Folders -----------------------------------------------------------------------------------
class FolderListView(ListView):
    ordering = ("account_id", "name", "id")
    filterset_class = FolderFilter
    output_serializer = s.FolderOutput

    def get_queryset(self) -> QuerySet[Folder]:
        return selectors.folder_list(user=self.request.user)

    @extend_schema(
        tags=["folders"], responses=s.FolderOutput(many=True), summary="Folders of all accounts"
    )
    def get(self, request: Request) -> Response:
        return self.list(request)


class AccountFolderListView(ListView):
    ordering = ("name", "id")
    filter_backends: list = []
    output_serializer = s.FolderOutput

    def get_queryset(self) -> QuerySet[Folder]:
        account_id = self.kwargs.get("pk")
        return selectors.folder_list(user=self.request.user, account_id=account_id)

    @extend_schema(
        tags=["folders"],
        responses=s.FolderOutput(many=True),
        summary="An account's folders, with unread and total counts",
    )
    def get(self, request: Request, pk: int) -> Response:
        _found(selectors.account_get(user=request.user, account_id=pk))
        return self.list(request)


# Threads -----------------------------------------------------------------------------------
class ThreadListView(ListView):
    ordering = ("-last_message_at", "-id")
    filterset_class = ThreadFilter

    def get_queryset(self) -> QuerySet[Thread]:
        return selectors.thread_list(user=self.request.user)

    def list(self, request: Request) -> Response:
        threads = self.filter_queryset(self.get_queryset())
        rows = self.paginate_queryset(threads.values(*selectors.THREAD_SUMMARY_COLUMNS))
        return self.get_paginated_response(s.thread_summaries(rows))

    @extend_schema(
        tags=["threads"],
        responses=s.ThreadOutput(many=True),
        summary="Threads, latest activity first",
    )
    def get(self, request: Request) -> Response:
        return self.list(request)


class ThreadDetailView(ApiView):
    @extend_schema(tags=["threads"], responses=s.ThreadDetailOutput, summary="A thread")
    def get(self, request: Request, pk: int) -> Response:
        thread = _found(selectors.thread_get(user=request.user, thread_id=pk))
        return Response(s.ThreadDetailOutput(thread, context={"request": request}).data)


# Messages ----------------------------------------------------------------------------------
# One SQL statement per page (messages.message_page) and a plain summary per row
# (s.message_summaries): the list is the API's hottest read. MessageFilter validates the
# parameters and documents them.
class MessageListView(ListView):
    filterset_class = MessageFilter

    def get_queryset(self) -> QuerySet[Message]:
        return Message.objects.none()  # for the schema: the list reads through message_page

    @extend_schema(
        tags=["messages"],
        responses=s.MessageSummaryOutput(many=True),
        summary="Messages, newest first (with q and order=relevance: best matches first)",
    )
    def get(self, request: Request) -> Response:
        query = message_query(request.query_params)

        def fetch(position: list[Any] | None, reverse: bool, limit: int) -> list[dict]:
            return message_page(
                user_id=request.user.pk,
                query=query,
                position=position,
                reverse=reverse,
                limit=limit,
            )

        types = [ORDER_FIELDS[name] for name, _ in query.ordering]
        rows = self.paginator.paginate(request, query.ordering, types, fetch)
        return self.get_paginated_response(s.message_summaries(rows))


class MessageDetailView(ApiView):
    query_serializer = s.MessageDetailQuery

    @extend_schema(
        tags=["messages"],
        parameters=[s.MessageDetailQuery],
        responses=s.MessageDetailOutput,
        summary="A message: headers, text, sanitized HTML, attachments",
    )
    def get(self, request: Request, pk: int) -> Response:
        query = _validated(s.MessageDetailQuery, request.query_params)
        message = _found(selectors.message_get(user=request.user, message_id=pk))
        return Response(self._detail(request, message, query))

    @extend_schema(
        tags=["messages"],
        request=s.MessageUpdateInput,
        responses={
            200: OpenApiResponse(s.MessageDetailOutput, description="Applied (local accounts)."),
            202: OpenApiResponse(
                s.MessageChangeQueued,
                description="Sent to the provider, which applies it; the store follows.",
            ),
            409: CONFLICT,
        },
        summary="Mark read/unread, flag, move, trash or restore, add or remove labels",
    )
    def patch(self, request: Request, pk: int) -> Response:
        message = _found(selectors.message_get(user=request.user, message_id=pk))
        data = _validated(s.MessageUpdateInput, request.data)
        if services.message_change(message=message, **data):
            message = selectors.message_get(user=request.user, message_id=pk)
            return Response(self._detail(request, message, {}))
        return Response({"status": "queued", "change": data}, status=status.HTTP_202_ACCEPTED)

    @staticmethod
    def _detail(request: Request, message: Any, query: dict[str, Any]) -> dict[str, Any]:
        attachments = list(message.attachments.all())
        cid_urls = {
            a.content_id: s.attachment_url(request, a.pk) for a in attachments if a.content_id
        }
        html = sanitize_mail_html(
            message.body_html,
            cid_urls=cid_urls,
            allow_remote_images=query.get("remote_images", False),
        )
        message.html = html.html
        message.remote_images_blocked = html.remote_images_blocked
        message.raw_url = request.build_absolute_uri(reverse("api:message-raw", args=[message.pk]))
        if query.get("raw_headers"):
            raw = selectors.message_raw(user=request.user, message_id=message.pk)
            message.raw_headers = _raw_headers(raw.head() if raw else b"")
        return s.MessageDetailOutput(message, context={"request": request}).data


def _raw_headers(raw: bytes) -> list[list[str]]:
    headers = BytesHeaderParser(policy=compat32).parsebytes(raw)
    return [[fix_text(name), decode_words(str(value))] for name, value in headers.raw_items()]


class DownloadView(ApiView):
    """Binary downloads: content negotiation falls back to JSON, which only errors use."""

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        return super().perform_content_negotiation(request, force=True)


class MessageRawView(DownloadView):
    @extend_schema(
        tags=["messages"],
        responses={(200, "message/rfc822"): OpenApiTypes.BINARY},
        summary="The message exactly as received (.eml)",
    )
    def get(self, request: Request, pk: int) -> HttpResponse:
        raw = _found(selectors.message_raw(user=request.user, message_id=pk))
        response = StreamingHttpResponse(raw.chunks(), content_type="message/rfc822")
        response["Content-Length"] = str(raw.size)
        response["Content-Disposition"] = f'attachment; filename="message-{pk}.eml"'
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = "sandbox; default-src 'none'"
        return response


class AttachmentDownloadView(DownloadView):
    @extend_schema(
        tags=["messages"],
        responses={(200, "*/*"): OpenApiTypes.BINARY},
        summary="An attachment's file (fetched from the raw message on first use if needed)",
        description=(
            "Served as a download whatever its type (Content-Disposition: attachment, "
            "sandboxed), with the attachment's own Content-Type."
        ),
    )
    def get(self, request: Request, pk: int) -> FileResponse:
        attachment = _found(selectors.attachment_get(user=request.user, attachment_id=pk))
        attachment = services.attachment_ensure_stored(attachment=attachment)
        stream, size = open_for_download(attachment.file.name)
        response = FileResponse(
            stream,
            as_attachment=True,
            filename=_printable(attachment.filename) or f"attachment-{attachment.pk}",
            content_type=attachment.content_type or "application/octet-stream",
        )
        response["Content-Length"] = str(size)
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = "sandbox; default-src 'none'"
        return response


def _printable(name: str) -> str:
    """A file name fit for a header: mail can carry control characters in it."""
    return "".join(ch for ch in name if ch.isprintable()).strip()


# Changes feed ------------------------------------------------------------------------------
class ChangesView(ApiView):
    query_serializer = s.ChangesQuery

    @extend_schema(
        tags=["changes"],
        parameters=[s.ChangesQuery],
        responses=s.ChangesOutput,
        summary="What changed since a cursor, in commit order (long poll with wait)",
        description=(
            "Events of all your accounts with an id above `cursor`, oldest first. With "
            "`wait`, an empty answer is held until a change arrives or the time is up "
            "(checked every half second)."
        ),
    )
    def get(self, request: Request) -> Response:
        query = _validated(s.ChangesQuery, request.query_params)
        events = selectors.changes_wait(
            user=request.user, cursor=query["cursor"], limit=query["limit"] + 1, wait=query["wait"]
        )
        more = len(events) > query["limit"]
        events = events[: query["limit"]]
        cursor = events[-1].pk if events else query["cursor"]
        return Response(
            {"changes": s.ChangeOutput(events, many=True).data, "cursor": cursor, "has_more": more}
        )
