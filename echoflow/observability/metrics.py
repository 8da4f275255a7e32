"""Prometheus exposition for ``/metrics``: every value is read from the database at scrape time.

Nothing is counted in process memory, so any web process (gunicorn workers, many machines) answers the same
numbers, and work done in Celery's prefork children is counted without prometheus_client's multiprocess mode.
Counters and histograms come from the all-time rollup rows the event processor maintains (one row per
organization); gauges are small indexed reads (runs by status, the dispatcher heartbeat, open alerts, backlogs).
"""

from __future__ import annotations

from collections.abc import Iterator

from django.conf import settings
from django.db.models import Count, Max
from django.utils import timezone
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from echoflow.accounts.models import Organization
from echoflow.events.models import OutboxEvent
from echoflow.observability.histograms import DURATION_BOUNDS_MS, LAG_BOUNDS_MS
from echoflow.observability.models import (
    ORG_WIDE,
    Alert,
    AlertRule,
    DeliveryStatus,
    EventCursor,
    MetricRollup,
    Resolution,
    WebhookDelivery,
)
from echoflow.observability.processor import CURSOR_NAME
from runs.models import DispatcherHeartbeat, Run, RunStatus

FINAL_STATUSES = ("succeeded", "failed", "timed_out", "cancelled", "skipped")
IN_PROGRESS_STATUSES = (RunStatus.QUEUED, RunStatus.WAITING, RunStatus.RUNNING, RunStatus.RETRYING)


def _histogram_buckets(bounds: tuple[int, ...], counts: list[int]) -> list[tuple[str, float]]:
    """Per-bucket counts (milliseconds) → Prometheus' cumulative ``le`` buckets in seconds, ``+Inf`` last."""
    cumulative = 0
    buckets: list[tuple[str, float]] = []
    padded = list(counts) + [0] * (len(bounds) + 1 - len(counts))
    for bound, n in zip(bounds, padded, strict=False):
        cumulative += n
        buckets.append((repr(bound / 1000), float(cumulative)))
    cumulative += sum(padded[len(bounds) :])
    buckets.append(("+Inf", float(cumulative)))
    return buckets


class EchoFlowCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        slugs = dict(Organization.objects.values_list("pk", "slug"))
        yield from self._run_counters(slugs)
        yield from self._in_progress(slugs)
        yield from self._dispatcher()
        yield from self._backlogs()

    def _run_counters(self, slugs: dict[int, str]) -> Iterator[Metric]:
        triggers = CounterMetricFamily(
            "echoflow_triggers", "Runs that started their first attempt (a schedule fired, or run-now).", labels=["org"]
        )
        runs = CounterMetricFamily("echoflow_runs", "Runs that reached a final status.", labels=["org", "status"])
        retries = CounterMetricFamily(
            "echoflow_run_retries", "Failed attempts scheduled for another try.", labels=["org"]
        )
        duration = HistogramMetricFamily(
            "echoflow_run_duration_seconds",
            "Duration of a run's final attempt (succeeded, failed or timed out).",
            labels=["org"],
        )
        lag = HistogramMetricFamily(
            "echoflow_trigger_lag_seconds",
            "Start of a run's first attempt minus its planned slot (due time for runs without a slot).",
            labels=["org"],
        )
        rows = MetricRollup.objects.filter(resolution=Resolution.TOTAL, schedule_id=ORG_WIDE).order_by(
            "organization_id"
        )
        for row in rows:
            org = slugs.get(row.organization_id)
            if org is None:
                continue  # the organization was deleted
            triggers.add_metric([org], float(row.triggers))
            for status in FINAL_STATUSES:
                runs.add_metric([org, status], float(getattr(row, status)))
            retries.add_metric([org], float(row.retried))
            duration.add_metric(
                [org], _histogram_buckets(DURATION_BOUNDS_MS, row.duration_buckets), row.duration_sum_ms / 1000
            )
            lag.add_metric([org], _histogram_buckets(LAG_BOUNDS_MS, row.lag_buckets), row.lag_sum_ms / 1000)
        yield from (triggers, runs, retries, duration, lag)

    def _in_progress(self, slugs: dict[int, str]) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "echoflow_runs_in_progress", "Runs now queued, waiting, running or retrying.", labels=["org", "status"]
        )
        # The status index (run_status_idx) finds these few rows among the finished millions.
        counts = {
            (org_id, status): n
            for org_id, status, n in Run.objects.filter(status__in=IN_PROGRESS_STATUSES)
            .values_list("organization_id", "status")
            .annotate(n=Count("id"))
            .values_list("organization_id", "status", "n")
            .order_by()
        }
        for org_id, org in sorted(slugs.items()):
            for status in IN_PROGRESS_STATUSES:
                gauge.add_metric([org, str(status)], float(counts.get((org_id, status), 0)))
        yield gauge

    def _dispatcher(self) -> Iterator[Metric]:
        beat = DispatcherHeartbeat.objects.filter(name="dispatcher").first()
        last = GaugeMetricFamily(
            "echoflow_dispatcher_last_heartbeat_timestamp_seconds",
            "Unix time of the dispatcher's last tick (absent until it first ticks).",
        )
        age = GaugeMetricFamily(
            "echoflow_dispatcher_heartbeat_age_seconds", "Seconds since the dispatcher's last tick."
        )
        tick = GaugeMetricFamily("echoflow_dispatcher_tick_duration_seconds", "Duration of the dispatcher's last tick.")
        created = GaugeMetricFamily("echoflow_dispatcher_last_tick_created_runs", "Runs created by the last tick.")
        enqueued = GaugeMetricFamily(
            "echoflow_dispatcher_last_tick_enqueued_runs", "Runs sent to workers by the last tick."
        )
        if beat is not None:
            last.add_metric([], beat.beat_at.timestamp())
            age.add_metric([], max((timezone.now() - beat.beat_at).total_seconds(), 0.0))
            tick.add_metric([], beat.last_tick_ms / 1000)
            created.add_metric([], float(beat.last_created))
            enqueued.add_metric([], float(beat.last_enqueued))
        yield from (last, age, tick, created, enqueued)

    def _backlogs(self) -> Iterator[Metric]:
        alerts = GaugeMetricFamily("echoflow_alerts_open", "Alerts raised and not resolved.", labels=["rule"])
        open_by_rule = dict(
            Alert.objects.filter(resolved_at__isnull=True)
            .values_list("rule")
            .annotate(n=Count("id"))
            .values_list("rule", "n")
            .order_by()
        )
        for rule in AlertRule.values:
            alerts.add_metric([rule], float(open_by_rule.get(rule, 0)))
        yield alerts

        # Both served by partial indexes (outbox_pending_idx, webhook_delivery_due_idx).
        if settings.EVENTS_REDIS_URL:  # without Redis nothing is relayed: the outbox itself is the event log
            yield GaugeMetricFamily(
                "echoflow_outbox_unrelayed_events",
                "Events not yet relayed to the Redis stream.",
                value=float(OutboxEvent.objects.filter(relayed_at__isnull=True).count()),
            )
        yield GaugeMetricFamily(
            "echoflow_webhook_deliveries_pending",
            "Webhook deliveries waiting for their first or next attempt.",
            value=float(WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING).count()),
        )
        newest = OutboxEvent.objects.aggregate(newest=Max("id"))["newest"] or 0
        position = EventCursor.objects.filter(name=CURSOR_NAME).values_list("position", flat=True).first() or 0
        yield GaugeMetricFamily(
            "echoflow_event_processor_lag_events",
            "Outbox events not yet read by the event processor (rollups, alerts, webhooks).",
            value=float(max(newest - position, 0)),
        )


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(EchoFlowCollector())


def metrics_exposition(accept: str | None = None) -> tuple[bytes, str]:
    """The scrape body and its content type (the OpenMetrics format when the scraper asks for it)."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(REGISTRY), content_type
