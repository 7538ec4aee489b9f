"""POST /gmail/push: Cloud Pub/Sub's push of Gmail's notifications (see gmail_sync.push).

Answers 204 once the notice is handled (Pub/Sub acknowledges it), 401/403 to a push without
Pub/Sub's token (nothing is read further), 400 to a body that is not a notification, and 503
when Google's certificates cannot be fetched (Pub/Sub retries).
"""

from __future__ import annotations

import logging

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from messages.api.errors import error_body

from .push import NotificationError, parse_notification, push_receive
from .push_auth import CertsUnavailable, PushRefused, verify_push_token

logger = logging.getLogger(__name__)


@csrf_exempt
@require_POST
def gmail_push(request: HttpRequest) -> HttpResponse:
    try:
        verify_push_token(request.headers.get("Authorization"))
    except PushRefused as exc:
        logger.info("gmail push refused (%s): %s", exc.status, exc.message)
        response = JsonResponse(error_body("push_refused", exc.message), status=exc.status)
        if exc.status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="gmail-push"'
        return response
    except CertsUnavailable:
        logger.warning("gmail push: Google's certificates are unavailable", exc_info=True)
        return JsonResponse(
            error_body("unavailable", "The push cannot be verified now."), status=503
        )
    try:
        notice = parse_notification(request.body)
    except NotificationError as exc:
        return JsonResponse(error_body("bad_notification", str(exc)), status=400)
    push_receive(notice)
    return HttpResponse(status=204)
