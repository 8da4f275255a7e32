"""Observability: metric rollups fed from the outbox, alerts, webhook subscriptions and their deliveries.

Everything here is derived from the event outbox by one processor (``processor.events_process``) that reads events
after a stored cursor, so counters are the same whichever web process, worker or machine is asked: Prometheus
reads them from the database, never from a process's memory.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from echoflow.accounts.models import Organization
from echoflow.observability.histograms import DURATION_BOUNDS_MS, LAG_BOUNDS_MS
from schedules.models import Schedule

# ``schedule_id`` of a rollup row that counts every run of its organization, ad-hoc runs included.
ORG_WIDE = 0
# ``start`` of the all-time (TOTAL) rollup rows: one row per organization, the source of Prometheus counters.
TOTAL_START = datetime(1970, 1, 1, tzinfo=UTC)


class Resolution(models.TextChoices):
    MINUTE = "minute", "Minute"
    HOUR = "hour", "Hour"
    TOTAL = "total", "All time"


# One column per histogram bucket, counts per bucket (not cumulative), so that rows add up in SQL: upserts add to
# them (``col = col + excluded.col``) and the summary is one SUM per column. ``duration_le_100`` counts runs of
# more than 50 and at most 100 ms; ``…_le_inf`` the rest.
DURATION_COLUMNS: tuple[str, ...] = (*(f"duration_le_{b}" for b in DURATION_BOUNDS_MS), "duration_le_inf")
LAG_COLUMNS: tuple[str, ...] = (*(f"lag_le_{b}" for b in LAG_BOUNDS_MS), "lag_le_inf")
COUNT_COLUMNS: tuple[str, ...] = ("triggers", "succeeded", "failed", "timed_out", "cancelled", "skipped", "retried")
SUM_COLUMNS: tuple[str, ...] = ("duration_count", "duration_sum_ms", "lag_count", "lag_sum_ms")
ROLLUP_COLUMNS: tuple[str, ...] = (*COUNT_COLUMNS, *SUM_COLUMNS, *DURATION_COLUMNS, *LAG_COLUMNS)


class MetricRollup(models.Model):
    """Counts of run events in one time bucket, for one organization (schedule_id 0) or one schedule.

    Written only by the event processor, with ``INSERT … ON CONFLICT DO UPDATE`` adding to the counts
    (``rollups.rollups_apply``); the histogram bucket columns are added below the class, one per bucket.
    """

    resolution = models.CharField(max_length=8, choices=Resolution.choices)
    start = models.DateTimeField()
    organization_id = models.BigIntegerField()
    schedule_id = models.BigIntegerField(default=ORG_WIDE)
    triggers = models.PositiveBigIntegerField(default=0, help_text="Runs that started their first attempt.")
    succeeded = models.PositiveBigIntegerField(default=0)
    failed = models.PositiveBigIntegerField(default=0)
    timed_out = models.PositiveBigIntegerField(default=0)
    cancelled = models.PositiveBigIntegerField(default=0)
    skipped = models.PositiveBigIntegerField(default=0)
    retried = models.PositiveBigIntegerField(default=0, help_text="Attempts that failed and were scheduled again.")
    duration_count = models.PositiveBigIntegerField(default=0)
    duration_sum_ms = models.PositiveBigIntegerField(default=0)
    lag_count = models.PositiveBigIntegerField(default=0)
    lag_sum_ms = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            # Serves the summary of one organization (schedule_id 0) or one schedule over a time range, and is the
            # conflict target of the processor's upsert.
            models.UniqueConstraint(
                fields=["resolution", "organization_id", "schedule_id", "start"], name="rollup_bucket_unique"
            ),
            models.CheckConstraint(condition=Q(resolution__in=Resolution.values), name="rollup_resolution_valid"),
        ]
        indexes = [
            # Serves the per-schedule breakdown of one organization over a time range.
            models.Index(fields=["resolution", "organization_id", "start"], name="rollup_org_window_idx"),
            # Serves pruning of old minute and hour rows.
            models.Index(fields=["resolution", "start"], name="rollup_prune_idx"),
        ]

    def __str__(self) -> str:
        scope = "org" if self.schedule_id == ORG_WIDE else f"schedule {self.schedule_id}"
        return f"{self.resolution} {self.start:%Y-%m-%d %H:%M} org {self.organization_id} {scope}"

    @property
    def duration_buckets(self) -> list[int]:
        return [int(getattr(self, c)) for c in DURATION_COLUMNS]

    @property
    def lag_buckets(self) -> list[int]:
        return [int(getattr(self, c)) for c in LAG_COLUMNS]


for _column in (*DURATION_COLUMNS, *LAG_COLUMNS):
    MetricRollup.add_to_class(_column, models.PositiveBigIntegerField(default=0))


class EventCursor(models.Model):
    """How far a reader of the outbox got.

    Outbox ids are taken when a row is inserted but become visible when its transaction commits, so a smaller id
    can appear after a bigger one was read. ``position`` is the highest id read; ``gaps`` maps each smaller id not
    seen yet to when the gap was noticed. Gaps are read again on every pass and forgotten after a grace period
    (an id taken by a transaction that rolled back never appears).
    """

    name = models.CharField(max_length=32, unique=True)
    position = models.BigIntegerField(default=0)
    gaps = models.JSONField(default=dict, blank=True)
    processed = models.PositiveBigIntegerField(default=0, help_text="Events read so far.")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name} at {self.position}"


class AlertRule(models.TextChoices):
    CONSECUTIVE_FAILURES = "consecutive_failures", "Consecutive failed runs"
    DISPATCHER_STALLED = "dispatcher_stalled", "Dispatcher stalled"


class Alert(models.Model):
    """One incident: raised once, open (possibly acknowledged) until its condition clears, then resolved."""

    rule = models.CharField(max_length=32, choices=AlertRule.choices)
    key = models.CharField(max_length=200, help_text="What the alert is about, e.g. schedule:12 or dispatcher.")
    organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.CASCADE, related_name="alerts"
    )
    schedule = models.ForeignKey(Schedule, null=True, blank=True, on_delete=models.SET_NULL, related_name="alerts")
    title = models.CharField(max_length=300)
    detail = models.JSONField(default=dict, blank=True)
    raised_at = models.DateTimeField()
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution_note = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-raised_at", "-id"]
        constraints = [
            # "Raised once": at most one unresolved alert per rule and subject, whoever raises it concurrently.
            models.UniqueConstraint(
                fields=["rule", "key"], condition=Q(resolved_at__isnull=True), name="alert_one_open_per_key"
            ),
            models.CheckConstraint(condition=Q(rule__in=AlertRule.values), name="alert_rule_valid"),
        ]
        indexes = [
            models.Index(fields=["organization", "-raised_at"], name="alert_org_raised_idx"),
            models.Index(fields=["raised_at"], condition=Q(resolved_at__isnull=True), name="alert_open_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.title} ({self.status})"

    @property
    def status(self) -> str:
        if self.resolved_at is not None:
            return "resolved"
        return "acknowledged" if self.acknowledged_at is not None else "open"


def default_failure_threshold() -> int:
    return int(settings.ALERT_CONSECUTIVE_FAILURES)


class ScheduleAlertRule(models.Model):
    """A schedule's own threshold for the consecutive-failures alert (default: ALERT_CONSECUTIVE_FAILURES)."""

    schedule = models.OneToOneField(Schedule, on_delete=models.CASCADE, related_name="alert_rule")
    consecutive_failures = models.PositiveIntegerField(
        default=default_failure_threshold, help_text="Raise an alert after this many failed runs in a row."
    )
    enabled = models.BooleanField(default=True, help_text="Off: this schedule never raises the alert.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(consecutive_failures__gte=1), name="alert_rule_threshold_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.schedule}: alert after {self.consecutive_failures} failures"


class FailureStreak(models.Model):
    """Failed runs in a row of one schedule, counted from the events in the order the processor reads them."""

    schedule_id = models.BigIntegerField(unique=True)
    organization_id = models.BigIntegerField()
    failures = models.PositiveIntegerField(default=0)
    last_run_id = models.BigIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"schedule {self.schedule_id}: {self.failures} failure(s) in a row"


# --- webhooks -------------------------------------------------------------------------------------------------------
KNOWN_EVENT_TYPES: tuple[str, ...] = (
    "run.queued",
    "run.waiting",
    "run.started",
    "run.retrying",
    "run.succeeded",
    "run.failed",
    "run.timed_out",
    "run.cancelled",
    "run.skipped",
    "schedule.created",
    "schedule.updated",
    "schedule.paused",
    "schedule.resumed",
    "schedule.cancelled",
    "schedule.deleted",
    "alert.raised",
    "alert.resolved",
)


def event_type_matches(pattern: str, event_type: str) -> bool:
    """``*`` matches everything, ``run.*`` every type starting with ``run.``, anything else itself."""
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


def validate_event_types(value: object) -> None:
    """A non-empty list of event types: known types, ``family.*``, ``*``, or a custom dotted name."""
    if not isinstance(value, list) or not value:
        raise ValidationError('choose at least one event type (a list such as ["run.failed", "alert.*"])')
    for item in value:
        if not isinstance(item, str) or not item or len(item) > 64 or any(c.isspace() for c in item):
            raise ValidationError(f"{item!r} is not an event type")
        if item.endswith(".*") and not any(t.startswith(item[:-1]) for t in KNOWN_EVENT_TYPES):
            raise ValidationError(f"{item!r} matches no known event type")


def validate_webhook_url(value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValidationError("must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise ValidationError("must not contain credentials; the signature authenticates EchoFlow")


def new_webhook_secret() -> str:
    return secrets.token_hex(32)


class WebhookSubscription(models.Model):
    """An organization's URL that receives chosen event types, each delivery signed with ``secret``."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="webhook_subscriptions")
    name = models.CharField(max_length=100)
    url = models.URLField(max_length=2000, validators=[validate_webhook_url])
    event_types = models.JSONField(
        default=list,
        validators=[validate_event_types],
        help_text='Event types to receive: e.g. ["run.failed", "alert.*"]; "*" for all.',
    )
    secret = models.CharField(
        max_length=128, default=new_webhook_secret, help_text="Signs every delivery (HMAC-SHA256)."
    )
    is_active = models.BooleanField(default=True, help_text="Off: nothing new is queued and pending deliveries wait.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["organization", "name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="webhook_name_unique_in_org"),
        ]

    def __str__(self) -> str:
        return f"{self.name} → {self.url}"

    def wants(self, event_type: str) -> bool:
        return any(event_type_matches(p, event_type) for p in self.event_types or [])


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SUCCEEDED = "succeeded", "Delivered"
    FAILED = "failed", "Failed (gave up)"


class WebhookDelivery(models.Model):
    """One event for one subscription: sent until it is answered 2xx or the attempts run out."""

    # Not indexed on its own: webhook_delivery_sub_idx and webhook_delivery_once_per_event lead with it
    # (observability.0002).
    subscription = models.ForeignKey(
        WebhookSubscription, on_delete=models.CASCADE, related_name="deliveries", db_index=False
    )
    event_id = models.UUIDField()
    event_type = models.CharField(max_length=64)
    payload = models.JSONField(help_text="The event envelope, sent as the request body.")
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["subscription", "event_id"], name="webhook_delivery_once_per_event"),
            models.CheckConstraint(condition=Q(status__in=DeliveryStatus.values), name="webhook_delivery_status_valid"),
        ]
        indexes = [
            # Serves the sender: pending deliveries whose next attempt is due.
            models.Index(fields=["next_attempt_at"], condition=Q(status="pending"), name="webhook_delivery_due_idx"),
            models.Index(fields=["subscription", "-created_at"], name="webhook_delivery_sub_idx"),
            models.Index(fields=["created_at"], name="webhook_delivery_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} → {self.subscription_id} ({self.status})"


class AlertEmail(models.Model):
    """The email for one alert.raised or alert.resolved event, sent through Django's email backend."""

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="emails")
    event_id = models.UUIDField(unique=True)
    event_type = models.CharField(max_length=64)
    recipients = models.JSONField(default=list)
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=DeliveryStatus.values), name="alert_email_status_valid"),
        ]
        indexes = [
            models.Index(fields=["next_attempt_at"], condition=Q(status="pending"), name="alert_email_due_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} for alert {self.alert_id} ({self.status})"
