"""The retry policy every provider's sync tasks share (smtp_sync, gmail_sync).

- our own infrastructure (PostgreSQL, Redis, the broker; `SYNC_INFRA_ERRORS`): retried after
  5 s, doubling up to 60 s (`INFRA_RETRY`); the account shows the error while it lasts.
- the provider unreachable for now: the provider's own policy (e.g. 15 s doubling up to
  5 minutes, 10 times), then the account shows the error and waits for its next trigger.

A retry is the route's queued task (`emailplatform.syncstate`): the watchdog does not enqueue
another meanwhile, and the retry carries its trigger token so it runs what is still owed.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kombu.exceptions
import redis
from celery import Task
from django.db import InterfaceError, OperationalError, close_old_connections

from emailplatform import syncstate
from emailplatform.object_storage import OBJECT_STORE_ERRORS

from .account_status import account_mark_error
from .models import Account

logger = logging.getLogger(__name__)

# Failures of the platform's own infrastructure, not of the account: retried soon.
SYNC_INFRA_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,
    *OBJECT_STORE_ERRORS,
)

INFRA_RETRY = {"base": 5, "cap": 60, "max_retries": 30}


def sync_task_retry(
    task: Task,
    exc: BaseException,
    *,
    account_id: int,
    provider: str,
    kind: str,
    options: dict[str, Any],
    trigger: str | None,
    policy: dict[str, int],
    infra: bool,
) -> None:
    """Raise TASK's retry with backoff after EXC (or EXC itself once POLICY's retries are
    spent); the retry takes the task's place as its route's queued sync."""
    if infra:
        close_old_connections()
    retries = task.request.retries
    if retries >= policy["max_retries"]:
        mark_quietly(account_id, f"sync failed after {retries} retries: {exc}")
        if not infra:  # a broken server: wait for the next trigger rather than spin
            _quietly(syncstate.forget_account, account_id)
        raise exc
    countdown = max(1.0, min(policy["cap"], policy["base"] * 2**retries) * random.uniform(0.7, 1))
    if infra:
        mark_quietly(
            account_id,
            f"sync interrupted ({type(exc).__name__}: {exc}); retrying in {countdown:.0f} s",
        )
    token = trigger or syncstate.new_token()
    _quietly(
        syncstate.queued_set,
        account_id,
        syncstate.route_of(kind),
        token,
        int(countdown) + syncstate.QUEUED_TTL,
    )
    if kind == syncstate.INCREMENTAL:
        args: list[Any] = [account_id, token]
    else:
        payload = {
            "accountId": account_id,
            "provider": provider,
            "options": options,
            "trigger": token,
            "continuation": kind == syncstate.CONTINUE,
        }
        args = [payload]
    logger.warning("account %s: %s; retry %s in %.0f s", account_id, exc, retries + 1, countdown)
    raise task.retry(exc=exc, countdown=countdown, args=args, kwargs={})


@dataclass(frozen=True)
class SyncStop:
    """An error that ends a sync task without a retry: the task's result is CODE (the error's
    own text when None), and the log line adds NOTE."""

    error: type[BaseException]
    code: str | None = None
    note: str = ""


@dataclass(frozen=True)
class ProviderSyncTasks:
    """What a provider's sync tasks differ in: its sync service (`<provider>_sync_account`),
    the errors that mean its server is unreachable for now (retried with RETRY_POLICY) and
    those that stop the task (STOPS, checked in order)."""

    provider: str
    sync: Callable[..., Any]
    unreachable: tuple[type[BaseException], ...]
    retry_policy: dict[str, int]
    stops: tuple[SyncStop, ...]
    chunk_seconds: int


def sync_task_run(
    task: Task,
    tasks: ProviderSyncTasks,
    account_id: int,
    *,
    kind: str,
    options: dict[str, Any],
    trigger: str | None,
) -> dict[str, Any]:
    """The body of every provider's full and incremental sync task: the sync service under
    the shared failure policy (the module's docstring)."""
    retry = {
        "account_id": account_id,
        "provider": tasks.provider,
        "kind": kind,
        "options": options,
        "trigger": trigger,
    }
    try:
        if trigger:
            syncstate.queued_clear(account_id, syncstate.route_of(kind), trigger)  # running now
        report = tasks.sync(
            account_id,
            full=kind == syncstate.FULL,
            max_seconds=tasks.chunk_seconds,
            options=options,
            request=trigger is None or task.request.retries > 0,
            retry_errors=(*tasks.unreachable, *SYNC_INFRA_ERRORS),
        )
    except Account.DoesNotExist:
        return {"error": "account does not exist"}
    except SYNC_INFRA_ERRORS as exc:
        sync_task_retry(task, exc, **retry, policy=INFRA_RETRY, infra=True)
    except tasks.unreachable as exc:
        sync_task_retry(task, exc, **retry, policy=tasks.retry_policy, infra=False)
    except tuple(stop.error for stop in tasks.stops) as exc:
        stop = next(stop for stop in tasks.stops if isinstance(exc, stop.error))
        logger.warning("account %s: %s%s", account_id, exc, f" ({stop.note})" if stop.note else "")
        return {"error": stop.code or str(exc)}
    if report is None:
        return {"coalesced": True}  # another sync runs: it runs what was asked at its end
    if report.passes == 0:
        return {"nothing to do": True}
    return {"done": report.done, "passes": report.passes, "summary": report.summary()}


def mark_account(account_id: int, reason: str, *, auth: bool = False) -> None:
    account = Account.objects.filter(pk=account_id).first()
    if account is not None:
        account_mark_error(account, reason, auth=auth)


def mark_quietly(account_id: int, reason: str) -> None:
    """Show the error on the account unless the database is what fails."""
    try:
        mark_account(account_id, reason)
    except SYNC_INFRA_ERRORS as exc:
        close_old_connections()
        logger.warning("account %s: could not record %r: %s", account_id, reason, exc)


def _quietly(function: Callable[..., Any], *args: Any) -> None:
    try:
        function(*args)
    except redis.RedisError as exc:
        logger.warning("%s failed: %s", function.__name__, exc)


def full_sync_payload_read(payload: Any) -> tuple[int, dict[str, Any], str] | str:
    """(account id, options, kind) of an EmailFullSync payload, or why it is unreadable."""
    try:
        account_id = int(payload["accountId"])
        options = dict(payload.get("options") or {})
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return f"EmailFullSync payload unreadable ({type(exc).__name__}: {exc})"
    kind = syncstate.CONTINUE if payload.get("continuation") else syncstate.FULL
    return account_id, options, kind
