"""Reads: run figures over a time window (from the rollups, never from the runs table), alerts, deliveries.

Percentiles are estimated from the fixed histogram buckets (``histograms.percentile``, the same interpolation as
Prometheus' ``histogram_quantile``): exact at bucket bounds, linear inside a bucket. A window of up to 48 hours is
summed from minute rows (the window starts at the whole minute), a longer one from hour rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Q, QuerySet, Sum
from django.utils import timezone

from echoflow.accounts.models import Organization
from echoflow.observability.histograms import DURATION_BOUNDS_MS, LAG_BOUNDS_MS, percentile
from echoflow.observability.models import (
    ORG_WIDE,
    ROLLUP_COLUMNS,
    Alert,
    MetricRollup,
    Resolution,
    WebhookDelivery,
)
from echoflow.observability.rollups import Counts, hour_of, minute_of
from schedules.models import Schedule

DEFAULT_WINDOW = "24h"
MAX_WINDOW = timedelta(days=31)
MINUTE_ROWS_UP_TO = timedelta(hours=48)
_WINDOW = re.compile(r"^\s*(\d{1,4})\s*([mhd])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}
_SUMS = {name: Sum(name) for name in ROLLUP_COLUMNS}


class WindowError(ValueError):
    """The window is not like ``15m``, ``24h`` or ``7d``, or is out of range."""


def parse_window(text: str | None) -> timedelta:
    """``"24h"`` → 24 hours. Minutes (m), hours (h) or days (d), from 1 minute to 31 days."""
    match = _WINDOW.match(text or DEFAULT_WINDOW)
    if not match:
        raise WindowError(f"window: {text!r} is not a duration like 15m, 24h or 7d")
    window = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    if not timedelta(minutes=1) <= window <= MAX_WINDOW:
        raise WindowError(f"window: {text!r} must be between 1m and 31d")
    return window


@dataclass(frozen=True)
class MetricsSummary:
    window: str
    since: datetime
    until: datetime
    organization_id: int
    schedule_id: int | None
    counts: Counts = field(repr=False)
    schedule_name: str = ""

    @property
    def triggers(self) -> int:
        return self.counts.triggers

    @property
    def success_rate(self) -> float | None:
        """Succeeded ÷ runs that ran to an outcome (succeeded + failed + timed out); None when there were none."""
        finished = self.counts.finished
        return round(self.counts.succeeded / finished, 4) if finished else None

    @property
    def failure_rate(self) -> float | None:
        finished = self.counts.finished
        return round((self.counts.failed + self.counts.timed_out) / finished, 4) if finished else None

    @property
    def duration_p50_ms(self) -> float | None:
        return _rounded(percentile(DURATION_BOUNDS_MS, self.counts.duration_buckets, 0.50))

    @property
    def duration_p95_ms(self) -> float | None:
        return _rounded(percentile(DURATION_BOUNDS_MS, self.counts.duration_buckets, 0.95))

    @property
    def lag_p95_ms(self) -> float | None:
        return _rounded(percentile(LAG_BOUNDS_MS, self.counts.lag_buckets, 0.95))

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of ``/api/v1/metrics/summary`` (documented in docs/observability.md)."""
        c = self.counts
        body: dict[str, Any] = {
            "window": self.window,
            "from": self.since.isoformat(),
            "to": self.until.isoformat(),
            "organization": self.organization_id,
            "schedule": self.schedule_id,
        }
        if self.schedule_name:
            body["schedule_name"] = self.schedule_name
        body.update(
            {
                "triggers": c.triggers,
                "runs": {
                    "succeeded": c.succeeded,
                    "failed": c.failed,
                    "timed_out": c.timed_out,
                    "cancelled": c.cancelled,
                    "skipped": c.skipped,
                },
                "retries": c.retried,
                "success_rate": self.success_rate,
                "failure_rate": self.failure_rate,
                "duration_ms": {
                    "p50": self.duration_p50_ms,
                    "p95": self.duration_p95_ms,
                    "count": c.duration_count,
                    "mean": round(c.duration_sum_ms / c.duration_count, 1) if c.duration_count else None,
                },
                "trigger_lag_ms": {
                    "p95": self.lag_p95_ms,
                    "count": c.lag_count,
                    "mean": round(c.lag_sum_ms / c.lag_count, 1) if c.lag_count else None,
                },
            }
        )
        return body

    def display(self) -> list[tuple[str, str]]:
        """(label, value) pairs for a page or the admin, e.g. the schedule's 24-hour figures."""

        def pct(value: float | None) -> str:
            return "-" if value is None else f"{value * 100:.1f} %"

        def ms(value: float | None) -> str:
            if value is None:
                return "-"
            return f"{value:.0f} ms" if value < 1000 else f"{value / 1000:.1f} s"

        return [
            ("Triggers", str(self.triggers)),
            ("Success rate", pct(self.success_rate)),
            ("Failure rate", pct(self.failure_rate)),
            ("Duration p50", ms(self.duration_p50_ms)),
            ("Duration p95", ms(self.duration_p95_ms)),
            ("Trigger lag p95", ms(self.lag_p95_ms)),
        ]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _window_rows(window: timedelta, now: datetime) -> tuple[str, datetime]:
    if window <= MINUTE_ROWS_UP_TO:
        return Resolution.MINUTE, minute_of(now - window)
    return Resolution.HOUR, hour_of(now - window)


def metrics_summary(
    *,
    organization: Organization | int,
    window: str | None = DEFAULT_WINDOW,
    schedule: Schedule | int | None = None,
    now: datetime | None = None,
) -> MetricsSummary:
    """Figures of one organization (all its runs, ad-hoc included) or of one of its schedules over ``window``.

    One SUM per column over at most one rollup row per minute of the window (one per hour beyond 48 h), found
    through the unique index (resolution, organization_id, schedule_id, start): cost independent of the number of
    runs.
    """
    span = parse_window(window)
    now = now or timezone.now()
    org_id = organization if isinstance(organization, int) else organization.pk
    schedule_id = schedule if isinstance(schedule, int) or schedule is None else schedule.pk
    resolution, since = _window_rows(span, now)
    totals = MetricRollup.objects.filter(
        resolution=resolution,
        organization_id=org_id,
        schedule_id=schedule_id if schedule_id is not None else ORG_WIDE,
        start__gte=since,
        start__lte=now,
    ).aggregate(**_SUMS)
    counts = Counts.from_columns(totals)
    return MetricsSummary(
        window=(window or DEFAULT_WINDOW).strip(),
        since=since,
        until=now,
        organization_id=org_id,
        schedule_id=schedule_id,
        counts=counts,
        schedule_name=schedule.name if isinstance(schedule, Schedule) else "",
    )


def schedule_metrics_summary(*, schedule: Schedule, window: str = DEFAULT_WINDOW) -> MetricsSummary:
    """The figures shown on a schedule's admin page and in its API detail."""
    return metrics_summary(organization=schedule.organization_id, schedule=schedule, window=window)


@dataclass(frozen=True)
class MetricsBreakdown:
    """Figures per schedule over one window: the window's bounds, and one summary per schedule that had events."""

    window: str
    since: datetime
    until: datetime
    organization_id: int
    schedules: list[MetricsSummary]


def metrics_breakdown(
    *, organization: Organization | int, window: str | None = DEFAULT_WINDOW, now: datetime | None = None
) -> MetricsBreakdown:
    """Figures per schedule of the organization that had runs in the window, most triggered first.

    Summed in SQL (GROUP BY schedule) from hour rows (index rollup_org_window_idx), so the window starts at the
    whole hour: ``24h`` covers 24 to 25 hours. Schedules deleted since still appear, with an empty name.
    """
    span = parse_window(window)
    now = now or timezone.now()
    org_id = organization if isinstance(organization, int) else organization.pk
    since = hour_of(now - span)
    label = (window or DEFAULT_WINDOW).strip()
    per_schedule = {
        row["schedule_id"]: Counts.from_columns(row)
        for row in MetricRollup.objects.filter(
            resolution=Resolution.HOUR, organization_id=org_id, start__gte=since, start__lte=now
        )
        .exclude(schedule_id=ORG_WIDE)
        .values("schedule_id")
        .annotate(**_SUMS)
        .order_by()
    }
    names = dict(Schedule.objects.filter(organization_id=org_id, pk__in=per_schedule).values_list("pk", "name"))
    summaries = [
        MetricsSummary(
            window=label,
            since=since,
            until=now,
            organization_id=org_id,
            schedule_id=schedule_id,
            counts=counts,
            schedule_name=names.get(schedule_id, ""),
        )
        for schedule_id, counts in per_schedule.items()
    ]
    summaries.sort(key=lambda s: (-s.triggers, s.schedule_id or 0))
    return MetricsBreakdown(window=label, since=since, until=now, organization_id=org_id, schedules=summaries)


def metrics_summary_by_schedule(
    *, organization: Organization | int, window: str | None = DEFAULT_WINDOW, now: datetime | None = None
) -> list[MetricsSummary]:
    """``metrics_breakdown(...).schedules``: one summary per schedule that had runs in the window."""
    return metrics_breakdown(organization=organization, window=window, now=now).schedules


# --- alerts ---------------------------------------------------------------------------------------------------------
ALERT_STATUSES = ("open", "acknowledged", "active", "resolved")


def alerts_list(
    *, organization: Organization | None, status: str | None = None, include_system: bool = True
) -> QuerySet[Alert]:
    """Alerts an organization may see: its own and, with ``include_system``, the system-wide ones (dispatcher).
    ``organization=None`` is the operator's view: every alert.

    ``status``: ``open`` (not acknowledged), ``acknowledged``, ``active`` (both: not resolved), ``resolved``.
    """
    alerts = Alert.objects.select_related("schedule", "acknowledged_by").order_by("-raised_at", "-id")
    if organization is not None:
        scope = Q(organization=organization)
        if include_system:
            scope |= Q(organization__isnull=True)
        alerts = alerts.filter(scope)
    return alerts_with_status(alerts, status)


def alerts_with_status(alerts: QuerySet[Alert], status: str | None) -> QuerySet[Alert]:
    """Narrow ``alerts`` to one status of ALERT_STATUSES (None or "" leaves them all); ValueError names others."""
    if status is None or status == "":
        return alerts
    if status not in ALERT_STATUSES:
        raise ValueError(f"status: {status!r} is not one of {', '.join(ALERT_STATUSES)}")
    if status == "resolved":
        return alerts.filter(resolved_at__isnull=False)
    alerts = alerts.filter(resolved_at__isnull=True)
    if status == "open":
        return alerts.filter(acknowledged_at__isnull=True)
    if status == "acknowledged":
        return alerts.filter(acknowledged_at__isnull=False)
    return alerts


@dataclass(frozen=True)
class AlertCounts:
    open: int  # raised, neither acknowledged nor resolved: nobody said they are on it
    acknowledged: int  # someone is on it; the condition has not cleared yet


def alert_counts(*, organization: Organization) -> AlertCounts:
    """Unresolved alerts the organization sees (its own and the system-wide ones), by whether they were
    acknowledged. One query over the partial index of unresolved alerts."""
    counts = alerts_list(organization=organization, status="active").aggregate(
        open=Count("pk", filter=Q(acknowledged_at__isnull=True)),
        acknowledged=Count("pk", filter=Q(acknowledged_at__isnull=False)),
    )
    return AlertCounts(open=counts["open"], acknowledged=counts["acknowledged"])


def alert_get(*, organization: Organization | None, alert_id: int, include_system: bool = True) -> Alert:
    """One alert the organization may see; raises ``Alert.DoesNotExist`` otherwise (answer 404, never 403).

    To acknowledge through the API use ``include_system=False``: a system-wide alert is acknowledged by an operator
    in the admin, not by one tenant for all of them.
    """
    return alerts_list(organization=organization, include_system=include_system).get(pk=alert_id)


def alert_as_dict(alert: Alert, *, organization: Organization | None = None) -> dict[str, Any]:
    """The JSON shape of an alert in the API. Who acknowledged a system-wide alert is not shown to tenants."""
    show_person = organization is None or alert.organization_id == organization.pk
    return {
        "id": alert.pk,
        "rule": alert.rule,
        "status": alert.status,
        "title": alert.title,
        "organization": alert.organization_id,
        "schedule": alert.schedule_id,
        "detail": alert.detail,
        "raised_at": alert.raised_at.isoformat(),
        "acknowledged_at": alert.acknowledged_at.isoformat() if alert.acknowledged_at else None,
        "acknowledged_by": (
            alert.acknowledged_by.get_username() if show_person and alert.acknowledged_by is not None else None
        ),
        "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
        "resolution_note": alert.resolution_note,
    }


def webhook_deliveries_of(*, subscription_id: int, limit: int = 50) -> QuerySet[WebhookDelivery]:
    return WebhookDelivery.objects.filter(subscription_id=subscription_id).order_by("-created_at", "-id")[:limit]
