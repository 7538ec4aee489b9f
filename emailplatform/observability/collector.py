"""The series `/metrics` serves, read at scrape time from Redis (counters and histograms every
process recorded, queue depths, IDLE reports) and PostgreSQL (accounts, running syncs, lag)."""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterator

import redis
from django.db import DatabaseError
from django.db.models import Count, Min
from django.db.models.functions import Coalesce
from django.utils import timezone
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from emailplatform import syncstate

from . import metrics, queues

logger = logging.getLogger(__name__)

NAMESPACE = "emailplatform"

COUNTERS = {
    "tasks_total": ("Celery tasks ended, by queue, task and state.", ("queue", "task", "state")),
    "messages_ingested_total": ("New messages stored, by provider.", ("provider",)),
    "syncs_total": (
        "Sync passes ended, by provider, kind and outcome.",
        ("provider", "kind", "outcome"),
    ),
    "errors_total": ("Errors by kind.", ("kind",)),
    "webhook_deliveries_total": ("Webhook delivery attempts, by outcome.", ("outcome",)),
}
HISTOGRAMS = {
    "task_duration_seconds": ("Celery task run time.", ("queue", "task"), metrics.TASK_BUCKETS),
    "sync_duration_seconds": (
        "Sync pass duration, by provider and kind.",
        ("provider", "kind"),
        metrics.SYNC_BUCKETS,
    ),
    "webhook_delivery_seconds": (
        "Webhook delivery latency, by outcome.",
        ("outcome",),
        metrics.DELIVERY_BUCKETS,
    ),
}


class PlatformCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            f"{NAMESPACE}_metrics_source_up",
            "1 when the source answered this scrape (redis, database).",
            labels=["source"],
        )
        try:
            yield from self._from_redis()
            up.add_metric(["redis"], 1)
        except redis.RedisError as exc:
            logger.warning("metrics: Redis unavailable: %s", exc)
            up.add_metric(["redis"], 0)
        try:
            yield from self._from_database()
            up.add_metric(["database"], 1)
        except DatabaseError as exc:
            logger.warning("metrics: database unavailable: %s", exc)
            up.add_metric(["database"], 0)
        yield up

    # Redis ----------------------------------------------------------------------------------
    def _from_redis(self) -> Iterator[Metric]:
        client = syncstate.client()
        pipe = client.pipeline(transaction=False)
        for name in COUNTERS:
            pipe.hgetall(metrics.counter_key(name))
        for name in HISTOGRAMS:
            pipe.hgetall(metrics.histogram_key(name))
        pipe.hgetall(metrics.IDLE_KEY)
        results = pipe.execute()
        counters, rest = results[: len(COUNTERS)], results[len(COUNTERS) :]
        histograms, idle = rest[: len(HISTOGRAMS)], rest[-1]
        for (name, (help_text, labels)), values in zip(COUNTERS.items(), counters, strict=True):
            family = CounterMetricFamily(f"{NAMESPACE}_{name}", help_text, labels=labels)
            for field, value in sorted(values.items()):
                family.add_metric(_label_values(field, labels), float(value))
            yield family
        for (name, spec), values in zip(HISTOGRAMS.items(), histograms, strict=True):
            yield _histogram(name, *spec, values)
        yield from self._queues()
        yield _idle_connections(client, idle)

    def _queues(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            f"{NAMESPACE}_queue_depth", "Tasks waiting on each Celery queue.", labels=["queue"]
        )
        for queue, count in queues.queue_depths().items():
            depth.add_metric([queue], count)
        yield depth
        yield GaugeMetricFamily(
            f"{NAMESPACE}_tasks_unacked",
            "Tasks taken by a worker and not yet acknowledged (running or waiting for an ETA).",
            value=queues.unacked_count(),
        )

    # PostgreSQL -----------------------------------------------------------------------------
    def _from_database(self) -> Iterator[Metric]:
        from messages.models import Account, DeadLetter, SyncRun

        accounts = GaugeMetricFamily(
            f"{NAMESPACE}_accounts",
            "Accounts by provider and status.",
            labels=["provider", "status"],
        )
        for row in Account.objects.values("provider", "status").annotate(n=Count("id")):
            accounts.add_metric([row["provider"], row["status"]], row["n"])
        yield accounts
        running = GaugeMetricFamily(
            f"{NAMESPACE}_syncs_running", "Sync passes running now.", labels=["provider", "kind"]
        )
        rows = (
            SyncRun.objects.filter(status=SyncRun.Status.RUNNING)
            .values("account__provider", "kind")
            .annotate(n=Count("id"))
        )
        for row in rows:
            running.add_metric([row["account__provider"], row["kind"]], row["n"])
        yield running
        lag = GaugeMetricFamily(
            f"{NAMESPACE}_sync_lag_seconds",
            "Seconds since the least recently synced active account of each provider last "
            "finished a sync (since its creation when it never did).",
            labels=["provider"],
        )
        now = timezone.now()
        rows = (
            Account.objects.filter(status=Account.Status.ACTIVE)
            .values("provider")
            .annotate(oldest=Min(Coalesce("last_sync_at", "created_at")))
        )
        for row in rows:
            lag.add_metric([row["provider"]], max(0.0, (now - row["oldest"]).total_seconds()))
        yield lag
        yield GaugeMetricFamily(
            f"{NAMESPACE}_dead_letters",
            "Dead letters kept for an operator (payloads that could not be processed).",
            value=DeadLetter.objects.count(),
        )


def _label_values(field: str, labels: tuple[str, ...]) -> list[str]:
    stored = dict(json.loads(field))
    return [str(stored.get(label, "")) for label in labels]


def _histogram(
    name: str, help_text: str, labels: tuple[str, ...], buckets: tuple[float, ...], values: dict
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(f"{NAMESPACE}_{name}", help_text, labels=labels)
    series: dict[str, dict[str, float]] = defaultdict(dict)
    for key, value in values.items():
        field, _, part = key.decode().rpartition("|")
        series[field][part] = float(value)
    for field, parts in sorted(series.items()):
        cumulative, points = 0.0, []
        for bound in [*(str(b) for b in buckets), "+Inf"]:
            cumulative += parts.get(bound, 0.0)
            points.append((bound, cumulative))
        family.add_metric(_label_values(field, labels), points, parts.get("sum", 0.0))
    return family


def _idle_connections(client: redis.Redis, reports: dict) -> GaugeMetricFamily:
    now, total, stale = time.time(), 0, []
    for process, raw in reports.items():
        report = json.loads(raw)
        if now - report["at"] > metrics.IDLE_REPORT_MAX_AGE_SECONDS:
            stale.append(process)
        else:
            total += int(report["count"])
    if stale:
        client.hdel(metrics.IDLE_KEY, *stale)
    return GaugeMetricFamily(
        f"{NAMESPACE}_idle_connections",
        "IMAP IDLE sessions held by the IDLE listeners (reported each refresh).",
        value=total,
    )
