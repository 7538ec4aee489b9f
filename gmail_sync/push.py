"""A Gmail push notification, from Pub/Sub's body to at most one incremental sync request.

Pub/Sub delivers at least once and in any order, and Gmail pushes once per change, so most
pushes carry nothing new. What each one costs, in order:

1. a Redis compare-and-set on the address: a historyId not above the highest already
   requested for it (a duplicate, an out-of-order one) ends here;
2. one indexed query for the address's Gmail accounts and their stored historyId: an unknown
   address, an account that is not active, or a historyId the store already covers ends here;
3. `topics.publish_incremental_sync`, coalesced per account by emailplatform.syncstate for
   the providers in SYNC_COALESCING_PROVIDERS (a burst while one task waits: one task).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from django.db.models import QuerySet
from django.db.models.functions import Upper

from emailplatform import syncstate, topics
from messages.models import Account

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
MARKER_TTL_SECONDS = 600


class NotificationError(ValueError):
    """A body that is not a Gmail push notification; the message says why."""


@dataclass(frozen=True)
class PushNotice:
    email_address: str
    history_id: int
    message_id: str


def parse_notification(body: bytes) -> PushNotice:
    """{"message": {"data": base64 JSON {"emailAddress", "historyId"}, "messageId", ...},
    "subscription"} as Pub/Sub pushes it."""
    if len(body) > MAX_BODY_BYTES:
        raise NotificationError("The body is too large for a push notification.")
    try:
        envelope = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise NotificationError("The body is not JSON.") from exc
    message = envelope.get("message") if isinstance(envelope, dict) else None
    if not isinstance(message, dict):
        raise NotificationError('The body has no "message" object.')
    data = message.get("data")
    if not isinstance(data, str) or not data:
        raise NotificationError('"message.data" is missing.')
    try:
        decoded = json.loads(base64.b64decode(data + "=" * (-len(data) % 4), altchars=b"-_"))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise NotificationError('"message.data" is not base64-encoded JSON.') from exc
    if not isinstance(decoded, dict):
        raise NotificationError('"message.data" is not a JSON object.')
    email = decoded.get("emailAddress")
    if not isinstance(email, str) or "@" not in email or len(email) > 320:
        raise NotificationError('"emailAddress" is missing or not an address.')
    history_id = _history_id(decoded.get("historyId"))
    message_id = message.get("messageId") or message.get("message_id") or ""
    return PushNotice(email.strip(), history_id, str(message_id)[:100])


def _history_id(value: Any) -> int:
    if isinstance(value, bool):
        raise NotificationError('"historyId" is not a number.')
    try:
        history_id = int(value)
    except (TypeError, ValueError) as exc:
        raise NotificationError('"historyId" is missing or not a number.') from exc
    if not 0 < history_id < 2**63:
        raise NotificationError('"historyId" is out of range.')
    return history_id


def push_receive(notice: PushNotice) -> int:
    """Request an incremental sync of each active account of the address that has not seen
    the notice's historyId; the number of requests."""
    if not _newer_than_requested(notice):
        return 0
    try:
        return _request_syncs(notice)
    except Exception:
        _forget_requested(notice)  # Pub/Sub's retry of this push must not be skipped
        raise


def gmail_accounts_of_address(email: str) -> list[tuple[int, str, int | None]]:
    """(account id, status, stored historyId) of every Gmail account of the address, whoever
    owns it; one query on the account_email_upper index."""
    return list(gmail_accounts_of_address_query(email))


def gmail_accounts_of_address_query(email: str) -> QuerySet:
    return (
        Account.objects.annotate(email_upper=Upper("email_address"))
        .filter(email_upper=email.upper(), provider=Account.Provider.GMAIL)
        .values_list("id", "status", "gmail_settings__history_id")
    )


def _request_syncs(notice: PushNotice) -> int:
    accounts = gmail_accounts_of_address(notice.email_address)
    if not accounts:
        logger.info("push for %s: no Gmail account has that address", notice.email_address)
        return 0
    requested = 0
    for account_id, status, stored in accounts:
        if status != Account.Status.ACTIVE or (stored is not None and notice.history_id <= stored):
            continue
        topics.publish_incremental_sync(account_id, Account.Provider.GMAIL)
        requested += 1
    return requested


# KEYS[1]: the address's marker (the highest historyId requested, as decimal text). ARGV: the
# notice's historyId (decimal text, no leading zeros), the marker's TTL. Compared as text by
# length first: historyIds may pass 2^53, where Lua's numbers lose digits. 1: newer (stored).
_NEWER = """
local cur = redis.call('GET', KEYS[1])
local new = ARGV[1]
if cur and (#cur > #new or (#cur == #new and cur >= new)) then return 0 end
redis.call('SET', KEYS[1], new, 'EX', tonumber(ARGV[2]))
return 1
"""
# Deletes the marker if it still holds ARGV[1].
_FORGET = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@lru_cache(maxsize=4)
def _scripts(client: Any) -> tuple[Any, Any]:
    return client.register_script(_NEWER), client.register_script(_FORGET)


def marker_key(email: str) -> str:
    return f"{syncstate.PREFIX}:gmail-push:{email.lower()}"


def _newer_than_requested(notice: PushNotice) -> bool:
    client = syncstate.client()
    newer, _ = _scripts(client)
    key = marker_key(notice.email_address)
    return bool(newer(keys=[key], args=[str(notice.history_id), MARKER_TTL_SECONDS]))


def _forget_requested(notice: PushNotice) -> None:
    client = syncstate.client()
    _, forget = _scripts(client)
    try:
        forget(keys=[marker_key(notice.email_address)], args=[str(notice.history_id)])
    except Exception:
        logger.warning("push marker of %s not cleared", notice.email_address, exc_info=True)
