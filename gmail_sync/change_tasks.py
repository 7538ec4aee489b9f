"""Gmail's write tasks: a client's change to a message (topics.MESSAGE_CHANGE_TASKS), and
sending an outbound message (topics.OUTBOUND_SEND_TASKS, see messages.outbox_delivery).

Failures: Gmail unreachable or rate limited after the client's own retries (GmailUnavailable)
is retried with backoff; a refused authorization parks the account (auth_error) with the
reason; a message Gmail no longer has (404) leaves the store; a change Gmail refuses (400, an
unknown label) is shown on the account and not retried.
"""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from emailplatform import topics
from messages.account_status import account_mark_error
from messages.mailbox import messages_remove
from messages.models import Account, Message
from messages.outbox_burst import outbound_send_task_run

from .changes import ChangeError, gmail_message_change
from .client import (
    GmailAuthError,
    GmailNotFound,
    GmailRequestError,
    GmailUnavailable,
)
from .outbound import GmailOutboundSender

RETRY = {
    "autoretry_for": (GmailUnavailable,),
    "retry_backoff": 15,
    "retry_backoff_max": 5 * 60,
    "retry_jitter": True,
    "max_retries": 10,
}


@shared_task(name=topics.MESSAGE_CHANGE_TASKS["gmail"], bind=True, **RETRY)
def apply_message_change(
    self: Task, account_id: int, message_id: int, change: dict[str, Any]
) -> dict[str, Any]:
    account = Account.objects.filter(pk=account_id).first()
    if account is None:
        return {"error": "account no longer exists"}
    try:
        labels = gmail_message_change(message_id, change)
    except Message.DoesNotExist:
        return {"error": "message no longer exists"}
    except GmailNotFound:
        gone = Message.objects.filter(pk=message_id).values_list("provider_id", flat=True)
        messages_remove(account, list(gone))
        return {"deleted": message_id}
    except GmailAuthError as exc:
        account_mark_error(account, exc.message, auth=True)
        return {"error": exc.message}
    except (ChangeError, GmailRequestError) as exc:
        account_mark_error(account, f"could not apply a change to message {message_id}: {exc}")
        return {"error": str(exc)}
    except GmailUnavailable as exc:
        if self.request.retries >= self.max_retries:
            account_mark_error(account, f"could not apply a change to message {message_id}: {exc}")
        raise
    return {"applied": change, "labelIds": labels}


@shared_task(name=topics.OUTBOUND_SEND_TASKS["gmail"])
def send_outbound(outbound_id: int | list[int]) -> dict[str, Any]:
    """One delivery step of an outbound message through the Gmail API, or of a burst of one
    account's (a list of ids: messages.outbox_burst). Retries and waits are dispatched again
    by messages.outbox_delivery, not by Celery."""
    return outbound_send_task_run(outbound_id, GmailOutboundSender)
