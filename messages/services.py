"""Writes of the store other than ingestion: dead letters, sync runs, full-sync scheduling."""

from __future__ import annotations

import json
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from emailplatform import topics

from .ingest import IngestResult
from .models import Account, DeadLetter, SyncRun

DEAD_LETTER_PAYLOAD_LIMIT = 256 * 1024


def dead_letter_record(*, task_name: str, reason: str, payload: Any) -> DeadLetter:
    """Keep a payload that broke the contract, with the reason, for an operator to inspect."""
    account_id = payload.get("accountId") if isinstance(payload, dict) else None
    if not isinstance(account_id, int) or isinstance(account_id, bool):
        account_id = None
    try:
        text = json.dumps(payload)
    except (TypeError, ValueError):
        text = repr(payload)
        payload = None
    if len(text) > DEAD_LETTER_PAYLOAD_LIMIT:
        payload = None
    return DeadLetter.objects.create(
        task_name=task_name,
        account_id=account_id,
        reason=reason,
        payload=payload,
        payload_excerpt="" if payload is not None else text[:4096],
    )


def sync_run_start(*, account: Account, kind: str, total: int | None = None) -> SyncRun:
    return SyncRun.objects.create(account=account, kind=kind, progress_total=total)


def sync_run_add(*, run_id: int, result: IngestResult) -> None:
    SyncRun.objects.filter(pk=run_id).update(
        created=F("created") + result.created,
        updated=F("updated") + result.updated,
        unchanged=F("unchanged") + result.unchanged,
        damaged=F("damaged") + result.damaged,
        progress_done=F("progress_done") + result.created + result.updated + result.unchanged,
    )


def sync_run_finish(*, run: SyncRun, error: str = "") -> None:
    run.status = SyncRun.Status.FAILED if error else SyncRun.Status.SUCCEEDED
    run.error = error
    run.finished_at = timezone.now()
    run.save(update_fields=["status", "error", "finished_at"])
    if not error:
        Account.objects.filter(pk=run.account_id).update(last_sync_at=run.finished_at)


def full_syncs_schedule() -> int:
    """Publish EmailFullSync for every active account whose provider syncs; return how many."""
    published = 0
    accounts = Account.objects.filter(status=Account.Status.ACTIVE).values_list("id", "provider")
    with transaction.atomic():
        for account_id, provider in accounts:
            if topics.publish_full_sync(account_id, provider, {"includeAttachments": True}):
                published += 1
    return published
