"""Every Celery task: counted and timed (metrics), and its account's ids set for its log lines."""

from __future__ import annotations

import inspect
import time
from contextvars import Token
from functools import lru_cache
from typing import Any

from celery import Task, signals

from . import metrics
from .logcontext import account_id_var, sync_run_id_var

STATES = {"SUCCESS": "succeeded", "FAILURE": "failed", "RETRY": "retried"}

# task id -> (start, the context tokens to reset)
_running: dict[str, tuple[float, list[tuple[Any, Token]]]] = {}


@lru_cache(maxsize=256)
def _account_position(task_name: str, run: Any) -> int | None:
    try:
        params = list(inspect.signature(run).parameters)
    except (TypeError, ValueError):
        return None
    return params.index("account_id") if "account_id" in params else None


def task_ids(task: Task, args: tuple, kwargs: dict) -> tuple[int | None, int | None]:
    """(account id, sync run id) a task's arguments name, by parameter name or payload key."""
    if isinstance(kwargs.get("account_id"), int):
        return kwargs["account_id"], None
    position = _account_position(task.name, task.run)
    if position is not None and position < len(args) and isinstance(args[position], int):
        return args[position], None
    if args and isinstance(args[0], dict):
        account_id, run_id = args[0].get("accountId"), args[0].get("syncRunId")
        return (
            account_id if isinstance(account_id, int) else None,
            run_id if isinstance(run_id, int) else None,
        )
    return None, None


@signals.task_prerun.connect
def _task_started(task_id: str, task: Task, args: tuple = (), kwargs: dict | None = None, **_: Any):
    account_id, run_id = task_ids(task, tuple(args or ()), kwargs or {})
    tokens: list[tuple[Any, Token]] = [
        (account_id_var, account_id_var.set(account_id)),
        (sync_run_id_var, sync_run_id_var.set(run_id)),
    ]
    _running[task_id] = (time.monotonic(), tokens)


@signals.task_postrun.connect
def _task_ended(task_id: str, task: Task, state: str | None = None, **_: Any) -> None:
    started, tokens = _running.pop(task_id, (None, []))
    for var, token in reversed(tokens):
        try:
            var.reset(token)
        except ValueError:  # set in another context (a thread the task started): leave it
            var.set(None)
    if task.request.is_eager:
        return
    delivery = task.request.delivery_info or {}
    queue = delivery.get("routing_key") or "unknown"
    seconds = time.monotonic() - started if started is not None else None
    metrics.task_finished(
        task=task.name, queue=queue, state=STATES.get(state or "", "other"), seconds=seconds
    )
