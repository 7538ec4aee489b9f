from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from .health import health
from .observability.views import metrics_view

urlpatterns = [
    path("admin/overview/", include("messages.admin_overview")),
    path("admin/", admin.site.urls),
    path("healthz", health, name="health"),
    path("metrics", metrics_view, name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/webhooks/", include("webhooks.api.urls")),
    path("api/", include("messages.api.urls")),
    path("gmail/", include("gmail_sync.urls")),
]

# Errors that never reach DRF (unknown URLs, CSRF failures, crashes): JSON under /api/.
handler400 = "messages.api.errors.bad_request"
handler403 = "messages.api.errors.permission_denied"
handler404 = "messages.api.errors.not_found"
handler500 = "messages.api.errors.server_error"
