"""Run events counted into rollup rows: per minute and per hour, per organization and per schedule, and all-time
per organization (the Prometheus counters).

What counts:
- ``run.started`` of attempt 1 is a *trigger*; its ``lag_ms`` (start minus slot, or minus due time for runs
  without a slot) goes into the lag histogram. Later attempts are retries, not triggers, and their lag would be
  the backoff.
- ``run.succeeded``/``run.failed``/``run.timed_out`` count by status; their ``duration_ms`` (the final attempt's
  duration) goes into the duration histogram.
- ``run.cancelled``, ``run.skipped`` count by status; ``run.retrying`` counts a retried attempt.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection
from django.utils import timezone

from echoflow.events.models import OutboxEvent
from echoflow.observability.histograms import (
    DURATION_BOUNDS_MS,
    LAG_BOUNDS_MS,
    add_counts,
    bucket_index,
    empty_duration_buckets,
    empty_lag_buckets,
)
from echoflow.observability.models import (
    COUNT_COLUMNS,
    DURATION_COLUMNS,
    LAG_COLUMNS,
    ORG_WIDE,
    ROLLUP_COLUMNS,
    SUM_COLUMNS,
    TOTAL_START,
    MetricRollup,
    Resolution,
)

STATUS_COLUMN = {
    "run.succeeded": "succeeded",
    "run.failed": "failed",
    "run.timed_out": "timed_out",
    "run.cancelled": "cancelled",
    "run.skipped": "skipped",
    "run.retrying": "retried",
}
WITH_DURATION = frozenset({"run.succeeded", "run.failed", "run.timed_out"})
ROLLED_UP_TYPES = frozenset({"run.started", *STATUS_COLUMN})
RollupKey = tuple[str, datetime, int, int]  # resolution, start, organization_id, schedule_id


@dataclass
class Counts:
    """Increments for one rollup row, or the sum of many rows (in the selectors)."""

    triggers: int = 0
    succeeded: int = 0
    failed: int = 0
    timed_out: int = 0
    cancelled: int = 0
    skipped: int = 0
    retried: int = 0
    duration_count: int = 0
    duration_sum_ms: int = 0
    duration_buckets: list[int] = field(default_factory=empty_duration_buckets)
    lag_count: int = 0
    lag_sum_ms: int = 0
    lag_buckets: list[int] = field(default_factory=empty_lag_buckets)

    @classmethod
    def from_columns(cls, values: Mapping[str, Any]) -> Counts:
        """From a row or an aggregate keyed by rollup column names (a missing or NULL sum is 0)."""
        counts = cls()
        for name in (*COUNT_COLUMNS, *SUM_COLUMNS):
            setattr(counts, name, int(values.get(name) or 0))
        counts.duration_buckets = [int(values.get(c) or 0) for c in DURATION_COLUMNS]
        counts.lag_buckets = [int(values.get(c) or 0) for c in LAG_COLUMNS]
        return counts

    @classmethod
    def from_row(cls, row: MetricRollup) -> Counts:
        return cls.from_columns({name: getattr(row, name) for name in ROLLUP_COLUMNS})

    def add(self, other: Counts) -> None:
        for name in (*COUNT_COLUMNS, *SUM_COLUMNS):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        add_counts(self.duration_buckets, other.duration_buckets)
        add_counts(self.lag_buckets, other.lag_buckets)

    @property
    def finished(self) -> int:
        """Runs that ran to an outcome: succeeded, failed or timed out (cancelled and skipped runs did not)."""
        return self.succeeded + self.failed + self.timed_out


def _number(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value)


def minute_of(when: datetime) -> datetime:
    return when.replace(second=0, microsecond=0)


def hour_of(when: datetime) -> datetime:
    return when.replace(minute=0, second=0, microsecond=0)


def keys_for(event: OutboxEvent) -> list[RollupKey]:
    """Every row one event counts in: minute and hour of its organization and schedule, and all-time."""
    org = int(event.organization_id or 0)
    minute, hour = minute_of(event.occurred_at), hour_of(event.occurred_at)
    keys: list[RollupKey] = [
        (Resolution.MINUTE, minute, org, ORG_WIDE),
        (Resolution.HOUR, hour, org, ORG_WIDE),
        (Resolution.TOTAL, TOTAL_START, org, ORG_WIDE),
    ]
    if event.schedule_id:
        keys += [(Resolution.MINUTE, minute, org, event.schedule_id), (Resolution.HOUR, hour, org, event.schedule_id)]
    return keys


_INDEX = {name: i for i, name in enumerate(ROLLUP_COLUMNS)}


def event_increments(event: OutboxEvent) -> list[tuple[int, int]]:
    """What one event adds, as (index in ROLLUP_COLUMNS, amount); empty when it says nothing about outcomes."""
    data = event.data if isinstance(event.data, dict) else {}
    if event.type == "run.started":
        if event.attempt != 1:
            return []
        increments = [(_INDEX["triggers"], 1)]
        lag = _number(data.get("lag_ms"))
        if lag is not None:
            lag = max(lag, 0)  # a start a hair before its slot (clocks of two machines) is on time
            bucket = LAG_COLUMNS[bucket_index(LAG_BOUNDS_MS, lag)]
            increments += [(_INDEX["lag_count"], 1), (_INDEX["lag_sum_ms"], lag), (_INDEX[bucket], 1)]
        return increments
    column = STATUS_COLUMN.get(event.type)
    if column is None:
        return []
    increments = [(_INDEX[column], 1)]
    duration = _number(data.get("duration_ms")) if event.type in WITH_DURATION else None
    if duration is not None:
        duration = max(duration, 0)
        bucket = DURATION_COLUMNS[bucket_index(DURATION_BOUNDS_MS, duration)]
        increments += [(_INDEX["duration_count"], 1), (_INDEX["duration_sum_ms"], duration), (_INDEX[bucket], 1)]
    return increments


def rollups_apply(events: Iterable[OutboxEvent]) -> int:
    """Add run events to their rollup rows; returns how many rows were written.

    The increments of a batch are summed in memory first, then added in the database without a read before the
    write: ``INSERT … ON CONFLICT (resolution, organization_id, schedule_id, start) DO UPDATE SET c = c +
    excluded.c``. On PostgreSQL the whole batch is one such statement over ``unnest`` of one array per column: every
    statement on this table checks the ~40 ``>= 0`` constraints of its counter columns, whose expressions PostgreSQL
    reads anew for each statement, so a statement per row cost about 0.2 ms of the server's CPU (two rows per run
    event of a schedule). SQLite gets one statement per row (executemany).
    """
    width = len(ROLLUP_COLUMNS)
    deltas: dict[RollupKey, list[int]] = {}
    for event in events:
        if event.type not in ROLLED_UP_TYPES or not event.organization_id:
            continue
        increments = event_increments(event)
        if not increments:
            continue
        for key in keys_for(event):
            row = deltas.get(key)
            if row is None:
                row = deltas[key] = [0] * width
            for index, amount in increments:
                row[index] += amount
    if not deltas:
        return 0
    quote = connection.ops.quote_name
    table = quote(MetricRollup._meta.db_table)
    columns = ["resolution", "start", "organization_id", "schedule_id", *ROLLUP_COLUMNS, "updated_at"]
    additions = ", ".join(f"{quote(c)} = {table}.{quote(c)} + excluded.{quote(c)}" for c in ROLLUP_COLUMNS)
    conflict = (
        f"ON CONFLICT ({quote('resolution')}, {quote('organization_id')}, {quote('schedule_id')}, {quote('start')}) "
        f"DO UPDATE SET {additions}, {quote('updated_at')} = excluded.{quote('updated_at')}"
    )
    # In key order: two writers that add to the same rows lock them in the same order.
    ordered = sorted(deltas.items())
    if connection.vendor == "postgresql":
        keys = list(zip(*(key for key, _ in ordered), strict=True))
        values = list(zip(*(row for _, row in ordered), strict=True))
        arrays = ["%s::text[]", "%s::timestamptz[]", "%s::bigint[]", "%s::bigint[]", *(["%s::bigint[]"] * width)]
        sql = (
            f"INSERT INTO {table} ({', '.join(quote(c) for c in columns)}) "
            f"SELECT *, %s::timestamptz FROM unnest({', '.join(arrays)}) {conflict}"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [timezone.now(), *(list(k) for k in keys), *(list(v) for v in values)])
        return len(ordered)
    sql = (
        f"INSERT INTO {table} ({', '.join(quote(c) for c in columns)}) "
        f"VALUES ({', '.join(['%s'] * len(columns))}) {conflict}"
    )
    adapt = connection.ops.adapt_datetimefield_value
    now = adapt(timezone.now())
    rows = [
        [resolution, adapt(bucket_start), org, schedule, *values, now]
        for (resolution, bucket_start, org, schedule), values in ordered
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)
    return len(rows)
