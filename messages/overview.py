"""What the admin's operations overview shows (messages.admin_overview), read for one staff
user: a superuser sees every account, any other staff user only the accounts they own (the
admin's owner scoping, messages.admin_scope)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import redis
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Q, QuerySet
from django.db.models.functions import TruncHour
from django.utils import timezone

from emailplatform.observability import queues

from .admin_scope import owned, sees_everyone
from .models import Account, DeadLetter, Message, SyncRun

CHART_HOURS = 24
RECENT_FAILURES = 20
RUNNING_SHOWN = 50
FAILURE_WINDOW = timedelta(hours=24)


@dataclass
class QueueDepths:
    waiting: dict[str, int] = field(default_factory=dict)
    unacked: int | None = None
    error: str = ""


@dataclass
class Overview:
    accounts_by_status: list[tuple[str, str, int]]  # (status, its label, count)
    accounts_total: int
    running: list[SyncRun]
    running_total: int
    failed_runs: list[SyncRun]
    accounts_in_error: list[Account]
    dead_letters_24h: int
    queues: QueueDepths
    ingested_per_hour: list[tuple[datetime, int]]  # oldest hour first, CHART_HOURS of them
    scoped: bool  # only the user's own accounts


def scoped_accounts(user: AbstractBaseUser) -> QuerySet[Account]:
    return owned(Account.objects.all(), user, "owner")


def accounts_by_status(accounts: QuerySet[Account]) -> list[tuple[str, str, int]]:
    counts = dict(accounts.values_list("status").annotate(n=Count("id")).order_by())
    return [(status, label, counts.get(status, 0)) for status, label in Account.Status.choices]


def running_syncs(accounts: QuerySet[Account]) -> QuerySet[SyncRun]:
    return (
        SyncRun.objects.filter(status=SyncRun.Status.RUNNING, account__in=accounts)
        .select_related("account")
        .order_by("started_at")
    )


def failed_runs(accounts: QuerySet[Account], *, since: datetime) -> list[SyncRun]:
    runs = SyncRun.objects.filter(
        status__in=[SyncRun.Status.FAILED, SyncRun.Status.INTERRUPTED],
        account__in=accounts,
        finished_at__gte=since,
    )
    return list(runs.select_related("account").order_by("-finished_at")[:RECENT_FAILURES])


def accounts_in_error(accounts: QuerySet[Account]) -> list[Account]:
    errors = accounts.filter(
        Q(status__in=[Account.Status.ERROR, Account.Status.AUTH_ERROR]) | ~Q(last_error="")
    )
    return list(errors.order_by("-last_error_at")[:RECENT_FAILURES])


def scoped_messages(user: AbstractBaseUser) -> QuerySet[Message]:
    return owned(Message.objects.all(), user, "account__owner")


def hourly_counts(messages: QuerySet[Message], since: datetime) -> QuerySet:
    return (
        messages.filter(created_at__gte=since)
        .annotate(hour=TruncHour("created_at"))
        .values_list("hour")
        .annotate(n=Count("id"))
        .order_by()
    )


def ingested_per_hour(
    user: AbstractBaseUser, *, hours: int = CHART_HOURS, now: datetime | None = None
) -> list[tuple[datetime, int]]:
    """Messages stored in each of the last HOURS whole hours up to the current one (zeros
    included), by the time they were stored (Message.created_at, a BRIN-indexed column)."""
    current = (now or timezone.now()).replace(minute=0, second=0, microsecond=0)
    first = current - timedelta(hours=hours - 1)
    counts = dict(hourly_counts(scoped_messages(user), first))
    hours_shown = [first + timedelta(hours=i) for i in range(hours)]
    return [(hour, counts.get(hour, 0)) for hour in hours_shown]


def queue_depths() -> QueueDepths:
    try:
        return QueueDepths(waiting=queues.queue_depths(), unacked=queues.unacked_count())
    except redis.RedisError as exc:
        return QueueDepths(error=f"the broker did not answer ({type(exc).__name__})")


def overview_get(*, user: AbstractBaseUser) -> Overview:
    accounts = scoped_accounts(user)
    running = running_syncs(accounts)
    since = timezone.now() - FAILURE_WINDOW
    by_status = accounts_by_status(accounts)
    account_ids = accounts.values("id")
    return Overview(
        accounts_by_status=by_status,
        accounts_total=sum(count for _, _, count in by_status),
        running=list(running[:RUNNING_SHOWN]),
        running_total=running.count(),
        failed_runs=failed_runs(accounts, since=since),
        accounts_in_error=accounts_in_error(accounts),
        dead_letters_24h=DeadLetter.objects.filter(
            Q() if sees_everyone(user) else Q(account_id__in=account_ids), created_at__gte=since
        ).count(),
        queues=queue_depths(),
        ingested_per_hour=ingested_per_hour(user),
        scoped=not sees_everyone(user),
    )
