"""Run figures over a window and alerts on the wire. The shapes are the selectors' (``MetricsSummary.as_dict``,
``alert_as_dict``); these serializers declare them for the schema and render their instants like the rest of the
API."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from echoflow.api.serializers.fields import RenderedInstantField, documented_enum
from echoflow.observability.models import AlertRule
from echoflow.observability.selectors import (
    DEFAULT_WINDOW,
    MetricsBreakdown,
    MetricsSummary,
    WindowError,
    parse_window,
)

WINDOW_HELP = "A duration: minutes (15m), hours (24h) or days (7d), from 1m to 31d. Default 24h."
BREAKDOWN_LIMIT_MAX = 1000


class WindowField(serializers.CharField):
    """A window such as 24h, checked by the selectors' own parse_window (the rule lives there, once)."""

    def __init__(self) -> None:
        super().__init__(required=False, default=DEFAULT_WINDOW, allow_blank=True, max_length=32, help_text=WINDOW_HELP)

    def to_internal_value(self, data: Any) -> str:
        text = super().to_internal_value(data)
        try:
            parse_window(text)
        except WindowError as exc:
            raise serializers.ValidationError(str(exc).removeprefix("window: ")) from None
        return text


class MetricsQuerySerializer(serializers.Serializer[Any]):
    """The query of GET /metrics/summary."""

    window = WindowField()
    schedule = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=2**63 - 1,
        help_text="One schedule's figures (id). Without it: the whole organization's, ad-hoc runs included.",
    )


class MetricsBreakdownQuerySerializer(serializers.Serializer[Any]):
    """The query of GET /metrics/summary/by-schedule."""

    window = WindowField()
    limit = serializers.IntegerField(
        required=False,
        default=100,
        min_value=1,
        max_value=BREAKDOWN_LIMIT_MAX,
        help_text=f"At most this many schedules, the most triggered first (1-{BREAKDOWN_LIMIT_MAX}, default 100).",
    )


class RunOutcomesSerializer(serializers.Serializer[Any]):
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()
    timed_out = serializers.IntegerField()
    cancelled = serializers.IntegerField()
    skipped = serializers.IntegerField()


class DurationFiguresSerializer(serializers.Serializer[Any]):
    p50 = serializers.FloatField(allow_null=True, help_text="Median, estimated from histogram buckets; ms.")
    p95 = serializers.FloatField(allow_null=True, help_text="95th percentile, estimated from histogram buckets; ms.")
    count = serializers.IntegerField(help_text="Runs with a duration (succeeded, failed, timed out).")
    mean = serializers.FloatField(allow_null=True)


class LagFiguresSerializer(serializers.Serializer[Any]):
    p95 = serializers.FloatField(allow_null=True, help_text="95th percentile of first start minus slot; ms.")
    count = serializers.IntegerField(help_text="Triggers (first attempts that started).")
    mean = serializers.FloatField(allow_null=True)


class MetricsSummarySerializer(serializers.Serializer[Any]):
    """Figures of one organization or one schedule over a window (docs/observability.md §3)."""

    organization = serializers.IntegerField()
    schedule = serializers.IntegerField(allow_null=True, help_text="null: the whole organization.")
    schedule_name = serializers.CharField(
        allow_null=True, help_text="null for the whole organization, or for a schedule deleted since."
    )
    triggers = serializers.IntegerField(help_text="Runs whose first attempt started in the window.")
    runs = RunOutcomesSerializer(help_text="Runs that reached each final status in the window.")
    retries = serializers.IntegerField(help_text="Failed attempts that were scheduled for another try.")
    success_rate = serializers.FloatField(
        allow_null=True, help_text="succeeded / (succeeded + failed + timed_out); null when none finished."
    )
    failure_rate = serializers.FloatField(
        allow_null=True, help_text="(failed + timed_out) / (succeeded + failed + timed_out); null when none finished."
    )
    duration_ms = DurationFiguresSerializer()
    trigger_lag_ms = LagFiguresSerializer()

    def get_fields(self) -> dict[str, serializers.Field]:
        # "from" is a Python keyword, so it cannot be a class attribute.
        return {
            "window": serializers.CharField(help_text="The window asked for, e.g. 24h."),
            "from": RenderedInstantField(help_text="Start of the window (whole minute; whole hour past 48 h)."),
            "to": RenderedInstantField(help_text="End of the window: the time of the request."),
            **super().get_fields(),
        }


def metrics_summary_data(summary: MetricsSummary) -> dict[str, Any]:
    return dict(MetricsSummarySerializer(summary.as_dict()).data)


class MetricsBreakdownSerializer(serializers.Serializer[Any]):
    organization = serializers.IntegerField()
    total = serializers.IntegerField(help_text="Schedules with events in the window (the list may stop at limit).")
    schedules = MetricsSummarySerializer(many=True, help_text="One entry per schedule, the most triggered first.")

    def get_fields(self) -> dict[str, serializers.Field]:
        return {
            "window": serializers.CharField(help_text="The window asked for, e.g. 24h."),
            "from": RenderedInstantField(help_text="Start of the window: always a whole hour (hour rollups)."),
            "to": RenderedInstantField(help_text="End of the window: the time of the request."),
            **super().get_fields(),
        }


def metrics_breakdown_data(breakdown: MetricsBreakdown, *, limit: int) -> dict[str, Any]:
    body = {
        "window": breakdown.window,
        "from": breakdown.since,
        "to": breakdown.until,
        "organization": breakdown.organization_id,
        "total": len(breakdown.schedules),
        "schedules": [summary.as_dict() for summary in breakdown.schedules[:limit]],
    }
    return dict(MetricsBreakdownSerializer(body).data)


ALERT_STATUSES = [("open", "Open"), ("acknowledged", "Acknowledged"), ("resolved", "Resolved")]


class AlertSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    rule = documented_enum(AlertRule.choices)
    # Inline: "status" names other enums (runs) in the schema.
    status = documented_enum(
        ALERT_STATUSES, inline=True, help_text="open, acknowledged (someone is on it), or resolved."
    )
    title = serializers.CharField()
    organization = serializers.IntegerField(allow_null=True, help_text="null: a system-wide alert (the dispatcher).")
    schedule = serializers.IntegerField(allow_null=True, help_text="The schedule it is about, if any (id).")
    detail = serializers.DictField(help_text="What the rule measured, e.g. consecutive_failures and last_error.")
    raised_at = RenderedInstantField()
    acknowledged_at = RenderedInstantField(allow_null=True)
    acknowledged_by = serializers.CharField(
        allow_null=True, help_text="Who acknowledged it (hidden on system-wide alerts seen by an organization)."
    )
    resolved_at = RenderedInstantField(allow_null=True)
    resolution_note = serializers.CharField(allow_blank=True, help_text="Why it was resolved.")
