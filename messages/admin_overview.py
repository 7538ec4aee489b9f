"""The operators' overview page in the admin (/admin/overview/): accounts by status, the syncs
running now with their progress, recent failures, queue depths, and messages stored per hour.

Staff only, with the view permission on accounts; a superuser sees every account, any other
staff user only the accounts they own (messages.overview.scoped_accounts). Linked from the admin
index (its template, set below)."""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path

from .hourly_chart import hourly_bar_chart
from .overview import CHART_HOURS, overview_get

admin.site.index_template = "admin/mailstore/index_with_overview.html"


def overview_view(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("mailstore.view_account"):
        raise PermissionDenied
    overview = overview_get(user=request.user)
    stored = sum(count for _, count in overview.ingested_per_hour)
    context = {
        **admin.site.each_context(request),
        "title": "Operations overview",
        "overview": overview,
        "stored_last_day": stored,
        "chart_hours": CHART_HOURS,
        "chart": hourly_bar_chart(
            overview.ingested_per_hour,
            title=f"Messages stored per hour, last {CHART_HOURS} hours: {stored} in all",
        ),
    }
    return TemplateResponse(request, "admin/mailstore/overview.html", context)


urlpatterns = [
    path("", admin.site.admin_view(overview_view), name="admin_overview"),
]
