"""users.watch and users.stop: while a mailbox's watch lasts (Gmail gives 7 days), Gmail
publishes its changes on the platform's Pub/Sub topic (GMAIL_PUBSUB_TOPIC), which pushes them
to /gmail/push (gmail_sync.push). A connected account is watched at once; beat renews every
watch that ends within RENEW_BEFORE (gmail_sync.renew_watches, daily); a paused or removed
account's watch is stopped (gmail_sync.signals)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.utils import timezone

from messages.account_status import account_mark_error
from messages.models import Account

from .client import GmailAuthError, GmailError, GmailUnavailable
from .connection import gmail_client_for
from .models import GmailSettings, WatchScope

logger = logging.getLogger(__name__)

RENEW_BEFORE = timedelta(days=2)
# Accounts whose watch is stopped: pushes for them are ignored anyway (gmail_sync.push).
UNWATCHED_STATUSES = (Account.Status.PAUSED, Account.Status.DELETING)

WATCHING = "watching"
FRESH = "fresh"
NOT_CONFIGURED = "not_configured"
NOT_ACTIVE = "not_active"
REFUSED = "refused"
STOPPED = "stopped"


TOPIC_REFUSED_REASON = (
    "Gmail may not publish to the Pub/Sub topic {topic}: new mail is found by polling until "
    "the platform's operator grants gmail-api-push@system.gserviceaccount.com the Pub/Sub "
    "Publisher role on it."
)


def topic_refused(error: GmailAuthError) -> bool:
    """A 403 from users.watch that is the operator's topic, not the user's grant: Gmail sends
    a test message to the topic first and reports that it was not authorized to."""
    return error.status == 403 and "Cloud PubSub" in error.message


def watch_label_ids(scope: str) -> list[str] | None:
    """users.watch labelIds of a watch scope (None: every label)."""
    return ["INBOX"] if scope == WatchScope.INBOX else None


def gmail_watch_start(account: Account, *, force: bool = False) -> str:
    """Watch an active account's mailbox and store when the watch ends; the outcome.

    A watch that runs longer than RENEW_BEFORE is left alone unless FORCE (a watch costs 100
    quota units, and every trigger may repeat). A refused grant puts the account in
    auth_error (its owner connects it again); a request Gmail refuses shows on the account.
    GmailUnavailable is raised: the caller retries later.
    """
    topic = settings.GMAIL_PUBSUB_TOPIC
    if not topic:
        logger.info("account %s: GMAIL_PUBSUB_TOPIC is not set; no push watch", account.pk)
        return NOT_CONFIGURED
    if account.status != Account.Status.ACTIVE:
        return NOT_ACTIVE
    gmail = GmailSettings.objects.filter(account_id=account.pk).first()
    if gmail is None:
        return NOT_ACTIVE
    renew_after = timezone.now() + RENEW_BEFORE
    if not force and gmail.watch_expiration and gmail.watch_expiration > renew_after:
        return FRESH
    try:
        answer = gmail_client_for(account).watch(
            topic, label_ids=watch_label_ids(gmail.watch_scope)
        )
    except GmailAuthError as exc:
        if topic_refused(exc):
            logger.error("account %s: %s", account.pk, exc.message)
            account_mark_error(account, TOPIC_REFUSED_REASON.format(topic=topic))
            return REFUSED
        GmailSettings.objects.filter(account_id=account.pk).update(watch_expiration=None)
        account_mark_error(account, exc.message, auth=True)
        return REFUSED
    except GmailUnavailable:
        raise
    except GmailError as exc:
        account_mark_error(account, f"Gmail refused to push changes: {exc.message}")
        return REFUSED
    expiration = datetime.fromtimestamp(int(answer["expiration"]) / 1000, tz=UTC)
    GmailSettings.objects.filter(account_id=account.pk).update(watch_expiration=expiration)
    logger.info("account %s: watched until %s", account.pk, expiration.isoformat())
    return WATCHING


def gmail_watch_stop(account: Account) -> str:
    """End the account's watch (users.stop) and forget its expiration.

    A grant already refused cannot stop anything (the watch lapses on its own, and pushes for
    an account that is not active are ignored). GmailUnavailable is raised: retried later.
    """
    try:
        gmail_client_for(account).stop()
    except GmailUnavailable:
        raise
    except GmailError as exc:
        logger.info("account %s: users.stop refused (%s)", account.pk, exc.message)
    if account.pk is not None:
        GmailSettings.objects.filter(account_id=account.pk).update(watch_expiration=None)
    return STOPPED


def gmail_watch_stop_quietly(account: Account) -> None:
    """Best effort for an account being removed right now: never raises."""
    try:
        gmail_watch_stop(account)
    except Exception:
        logger.warning("could not stop the Gmail watch of %s", account.email_address, exc_info=True)


@dataclass
class WatchesDue:
    start: list[int] = field(default_factory=list)  # active, watch missing or ending soon
    stop: list[int] = field(default_factory=list)  # paused or being deleted, still watched


def watches_due(now: datetime | None = None) -> WatchesDue:
    """What beat's renewal does: two indexed reads, no Gmail call."""
    now = now or timezone.now()
    due = WatchesDue()
    gmail = GmailSettings.objects.filter(account__provider=Account.Provider.GMAIL)
    if settings.GMAIL_PUBSUB_TOPIC:
        ending = gmail.filter(account__status=Account.Status.ACTIVE).exclude(
            watch_expiration__gt=now + RENEW_BEFORE
        )
        due.start = list(ending.values_list("account_id", flat=True).order_by("account_id"))
    watched = gmail.filter(account__status__in=UNWATCHED_STATUSES, watch_expiration__gt=now)
    due.stop = list(watched.values_list("account_id", flat=True).order_by("account_id"))
    return due
