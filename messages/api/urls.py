"""The client API's routes, mounted under /api/ (namespace "api")."""

from django.urls import path, register_converter

from . import outbox_views, views
from .schema import MAX_ID


class IdConverter:
    """A positive bigint: larger numbers are a 404, not a database error."""

    regex = "[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if not 1 <= number <= MAX_ID:
            raise ValueError(value)
        return number

    def to_url(self, value: int) -> str:
        return str(value)


register_converter(IdConverter, "id")

app_name = "api"

urlpatterns = [
    path("", views.ApiIndexView.as_view(), name="index"),
    path("auth/token/", views.TokenView.as_view(), name="token"),
    path("accounts/", views.AccountListView.as_view(), name="account-list"),
    path("accounts/<id:pk>/", views.AccountDetailView.as_view(), name="account-detail"),
    path(
        "accounts/<slug:provider>/authorize/",
        views.AccountAuthorizeView.as_view(),
        name="account-authorize",
    ),
    path("accounts/<id:pk>/sync/", views.AccountSyncView.as_view(), name="account-sync"),
    path(
        "accounts/<id:pk>/test-connection/",
        views.AccountTestConnectionView.as_view(),
        name="account-test-connection",
    ),
    path(
        "accounts/<id:pk>/folders/",
        views.AccountFolderListView.as_view(),
        name="account-folders",
    ),
    path("folders/", views.FolderListView.as_view(), name="folder-list"),
    path("threads/", views.ThreadListView.as_view(), name="thread-list"),
    path("threads/<id:pk>/", views.ThreadDetailView.as_view(), name="thread-detail"),
    path("messages/", views.MessageListView.as_view(), name="message-list"),
    path("messages/<id:pk>/", views.MessageDetailView.as_view(), name="message-detail"),
    path("messages/<id:pk>/raw/", views.MessageRawView.as_view(), name="message-raw"),
    path(
        "attachments/<id:pk>/download/",
        views.AttachmentDownloadView.as_view(),
        name="attachment-download",
    ),
    path("outbound/", outbox_views.OutboundListView.as_view(), name="outbound-list"),
    path("outbound/batch/", outbox_views.OutboundBatchView.as_view(), name="outbound-batch"),
    path("outbound/<id:pk>/", outbox_views.OutboundDetailView.as_view(), name="outbound-detail"),
    path("outbound/<id:pk>/send/", outbox_views.OutboundSendView.as_view(), name="outbound-send"),
    path(
        "outbound/<id:pk>/cancel/",
        outbox_views.OutboundCancelView.as_view(),
        name="outbound-cancel",
    ),
    path(
        "outbound/<id:pk>/attachments/",
        outbox_views.OutboundAttachmentView.as_view(),
        name="outbound-attachments",
    ),
    path(
        "outbound/<id:pk>/attachments/<id:attachment>/",
        outbox_views.OutboundAttachmentDetailView.as_view(),
        name="outbound-attachment-detail",
    ),
    path("changes/", views.ChangesView.as_view(), name="changes"),
]
