"""The OAuth callback: a browser page, reached without an API token (the `state` says who
started). Success shows a page (API-started flows) or goes back to the admin."""

from __future__ import annotations

import logging

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from .accounts import GmailConnectError, account_connect_callback
from .oauth import AuthorizationError

logger = logging.getLogger(__name__)

# The query carries a one-time code: no page a browser might send it to as a Referer.
REFERRER_POLICY = "no-referrer"


@never_cache
@require_GET
def oauth_callback(request: HttpRequest) -> HttpResponse:
    query = request.GET
    try:
        connected, origin = account_connect_callback(
            state=query.get("state", ""),
            code=query.get("code", ""),
            error=query.get("error", ""),
            user=request.user,
        )
    except (AuthorizationError, GmailConnectError) as exc:
        status = getattr(exc, "status", 400)
        logger.info("gmail connection refused: %s", exc.code)
        response = render(
            request,
            "gmail_sync/oauth_result.html",
            {"ok": False, "message": exc.message, "code": exc.code},
            status=status,
        )
    else:
        account = connected.account
        verb = "connected" if connected.created else "reconnected"
        logger.info("gmail account %s %s", account.pk, verb)
        if origin == "admin":
            messages.success(request, f"Gmail account {account.email_address} {verb}.")
            url = reverse("admin:mailstore_account_change", args=[account.pk])
            response = HttpResponseRedirect(url)
        else:
            response = render(
                request,
                "gmail_sync/oauth_result.html",
                {"ok": True, "address": account.email_address, "verb": verb},
            )
    response["Referrer-Policy"] = REFERRER_POLICY
    return response
