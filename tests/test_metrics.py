"""Metrics: the event processor's rollups, /metrics for Prometheus after real runs, and the windowed summary by
organization and by schedule (read from rollups, with percentiles from histogram buckets)."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from echoflow.accounts.models import Organization
from echoflow.events.bus import EventSpec, event_record
from echoflow.events.models import OutboxEvent
from echoflow.observability.histograms import DURATION_BOUNDS_MS, percentile
from echoflow.observability.models import ORG_WIDE, ROLLUP_COLUMNS, EventCursor, MetricRollup, Resolution
from echoflow.observability.processor import CURSOR_NAME, GAP_GRACE, events_process
from echoflow.observability.selectors import (
    WindowError,
    metrics_summary,
    metrics_summary_by_schedule,
    parse_window,
    schedule_metrics_summary,
)
from runs.executor import run_execute
from runs.models import DispatcherHeartbeat
from runs.services import schedule_run_now
from schedules.models import Schedule
from schedules.services import schedule_create
from tests.conftest import embedded_child

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 23, 12, 30, tzinfo=UTC)
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _schedule(org: Organization, name: str, action: str = "echoflow.noop", **extra: Any) -> Schedule:
    base = {"name": name, "trigger_kind": "cron", "cron": "0 0 1 1 *", "action_name": action, "max_attempts": 1}
    return schedule_create(organization=org, data={**base, **extra})


def _samples(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def _total(org: Organization) -> MetricRollup:
    return MetricRollup.objects.get(resolution=Resolution.TOTAL, organization_id=org.pk, schedule_id=ORG_WIDE)


def test_metrics_text_after_a_few_runs(client: Client, org: Organization, other_org: Organization) -> None:
    ok = _schedule(org, "ok")
    bad = _schedule(org, "bad", "echoflow.fail", payload={"permanent": True})
    for schedule in (ok, ok, bad):
        run, _ = schedule_run_now(schedule=schedule)
        run_execute(run_id=run.pk, worker="w")
    schedule_run_now(schedule=ok)  # queued, not executed
    beat = DispatcherHeartbeat.objects.create(
        name="dispatcher", beat_at=datetime.now(UTC), last_tick_ms=42, last_created=5, last_enqueued=4
    )
    events_process()

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = _samples(response.content.decode())
    assert _value(samples, "echoflow_triggers_total", org="acme") == 3
    assert _value(samples, "echoflow_runs_total", org="acme", status="succeeded") == 2
    assert _value(samples, "echoflow_runs_total", org="acme", status="failed") == 1
    assert _value(samples, "echoflow_runs_total", org="acme", status="timed_out") == 0
    assert _value(samples, "echoflow_run_duration_seconds_count", org="acme") == 3
    assert _value(samples, "echoflow_run_duration_seconds_bucket", org="acme", le="+Inf") == 3
    assert _value(samples, "echoflow_run_duration_seconds_bucket", org="acme", le="5.0") == 3  # noop and fail: fast
    assert _value(samples, "echoflow_trigger_lag_seconds_count", org="acme") == 3
    assert _value(samples, "echoflow_runs_in_progress", org="acme", status="queued") == 1
    assert _value(samples, "echoflow_runs_in_progress", org="acme", status="running") == 0
    assert _value(samples, "echoflow_runs_in_progress", org="globex", status="queued") == 0
    assert _value(samples, "echoflow_dispatcher_tick_duration_seconds") == 0.042
    assert _value(samples, "echoflow_dispatcher_last_heartbeat_timestamp_seconds") == beat.beat_at.timestamp()
    assert _value(samples, "echoflow_dispatcher_last_tick_created_runs") == 5
    assert _value(samples, "echoflow_alerts_open", rule="consecutive_failures") == 0
    assert _value(samples, "echoflow_event_processor_lag_events") == 0
    assert ("echoflow_triggers_total", frozenset({("org", "globex")})) not in samples  # no runs yet

    # The numbers live in the database: a second web process (another client) reads the same, and more events
    # are counted only once they are processed.
    schedule_run_now(schedule=bad)
    assert _value(_samples(Client().get("/metrics").content.decode()), "echoflow_event_processor_lag_events") == 1
    events_process()
    assert _value(_samples(Client().get("/metrics").content.decode()), "echoflow_triggers_total", org="acme") == 3


def test_metrics_asks_for_the_token_when_one_is_set(client: Client, settings: Any) -> None:
    settings.METRICS_TOKEN = "s3cret"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret").status_code == 200


def _event(org: Organization, kind: str, *, schedule: Schedule | None, when: datetime, **data: Any) -> None:
    attempt = data.pop("attempt", 1)
    event_record(
        EventSpec(
            type=kind,
            organization_id=org.pk,
            schedule_id=schedule.pk if schedule else None,
            run_id=1,
            attempt=attempt,
            data=data,
        ),
        occurred_at=when,
    )


def test_the_summary_by_organization_and_schedule_reads_the_window(
    org: Organization, django_assert_num_queries: Any
) -> None:
    a = _schedule(org, "a")
    b = _schedule(org, "b")
    recent = NOW - timedelta(hours=2)
    for _ in range(4):
        _event(org, "run.started", schedule=a, when=recent, lag_ms=100)
    _event(org, "run.started", schedule=a, when=recent, lag_ms=90_000, attempt=2)  # a retry: not a trigger
    for duration in (80, 90, 200):
        _event(org, "run.succeeded", schedule=a, when=recent, duration_ms=duration)
    _event(org, "run.failed", schedule=a, when=recent, duration_ms=4000, error="boom")
    _event(org, "run.timed_out", schedule=a, when=recent, duration_ms=30_000)
    _event(org, "run.cancelled", schedule=a, when=recent)
    _event(org, "run.skipped", schedule=a, when=recent)
    _event(org, "run.retrying", schedule=a, when=recent, duration_ms=10)
    _event(org, "run.succeeded", schedule=b, when=recent, duration_ms=100)
    _event(org, "run.failed", schedule=None, when=recent, duration_ms=100)  # an ad-hoc run
    for _ in range(5):
        _event(org, "run.succeeded", schedule=a, when=NOW - timedelta(hours=30), duration_ms=100)  # outside 24 h
    events_process()

    with django_assert_num_queries(1):
        whole = metrics_summary(organization=org.pk, window="24h", now=NOW)
    assert (whole.counts.succeeded, whole.counts.failed, whole.counts.timed_out) == (4, 2, 1)
    assert (whole.success_rate, whole.failure_rate) == (0.5714, 0.4286)

    one = metrics_summary(organization=org, schedule=a, window="24h", now=NOW)
    body = one.as_dict()
    assert body["triggers"] == 4
    assert body["runs"] == {"succeeded": 3, "failed": 1, "timed_out": 1, "cancelled": 1, "skipped": 1}
    assert body["retries"] == 1
    assert (body["success_rate"], body["failure_rate"]) == (0.6, 0.4)
    # Durations 80, 90, 200, 4000, 30000 ms: the median falls in the 100-250 ms bucket, half-way through its
    # single sample (175 ms); p95 in the 10-30 s bucket, three quarters in (25 s).
    assert body["duration_ms"] == {"p50": 175.0, "p95": 25_000.0, "count": 5, "mean": 6874.0}
    assert body["trigger_lag_ms"] == {"p95": 97.5, "count": 4, "mean": 100.0}
    assert body["from"] == (NOW - timedelta(hours=24)).isoformat() and body["window"] == "24h"

    week = metrics_summary(organization=org, schedule=a, window="7d", now=NOW)
    assert week.counts.succeeded == 8  # hour rows: the 30-hour-old runs are in
    assert one.display()[:3] == [("Triggers", "4"), ("Success rate", "60.0 %"), ("Failure rate", "40.0 %")]
    assert schedule_metrics_summary(schedule=b).schedule_id == b.pk

    by_schedule = metrics_summary_by_schedule(organization=org, window="24h", now=NOW)
    assert [(s.schedule_name, s.triggers, s.counts.succeeded) for s in by_schedule] == [("a", 4, 3), ("b", 0, 1)]


def test_windows_are_checked() -> None:
    assert parse_window("15m") == timedelta(minutes=15)
    assert parse_window(None) == timedelta(hours=24)
    for bad in ("24", "1y", "0m", "32d", "-1h"):
        with pytest.raises(WindowError):
            parse_window(bad)


def test_percentiles_interpolate_inside_a_bucket_like_prometheus() -> None:
    counts = [0] * (len(DURATION_BOUNDS_MS) + 1)
    assert percentile(DURATION_BOUNDS_MS, counts, 0.5) is None
    counts[0] = 10  # ten runs of at most 50 ms
    assert percentile(DURATION_BOUNDS_MS, counts, 0.5) == 25.0
    counts[-1] = 90  # ninety runs over an hour: the estimate cannot exceed the last finite bound
    assert percentile(DURATION_BOUNDS_MS, counts, 0.95) == 3_600_000.0


def _record(org: Organization, n: int) -> list[OutboxEvent]:
    return [
        event_record(EventSpec(type="run.succeeded", organization_id=org.pk, data={"duration_ms": 5})) for _ in range(n)
    ]


def test_an_event_that_commits_after_a_newer_one_was_read_is_still_counted_once(org: Organization) -> None:
    _, late, third = _record(org, 3)
    # ``late`` took its id before ``third`` but its transaction had not committed when the processor read.
    fields = {f.attname: getattr(late, f.attname) for f in OutboxEvent._meta.concrete_fields}
    late.delete()
    assert events_process().events == 2
    cursor = EventCursor.objects.get(name=CURSOR_NAME)
    assert (cursor.position, list(cursor.gaps)) == (third.pk, [str(fields["id"])])
    assert _total(org).succeeded == 2

    OutboxEvent.objects.create(**fields)  # ... now it commits
    result = events_process()
    assert (result.events, result.late_events) == (1, 1)
    assert _total(org).succeeded == 3
    assert EventCursor.objects.get(name=CURSOR_NAME).gaps == {}
    assert events_process().events == 0 and _total(org).succeeded == 3  # each event exactly once

    # An id whose transaction rolled back never appears: the gap is forgotten after the grace period.
    _, gone, _ = _record(org, 3)
    gone_id = gone.pk
    gone.delete()
    events_process()
    assert list(EventCursor.objects.get(name=CURSOR_NAME).gaps) == [str(gone_id)]
    events_process(now=datetime.now(UTC) + GAP_GRACE + timedelta(seconds=1))
    assert EventCursor.objects.get(name=CURSOR_NAME).gaps == {}
    assert _total(org).succeeded == 5


def test_pruning_keeps_recent_rollups_and_the_all_time_counters(org: Organization) -> None:
    from echoflow.observability.maintenance import observability_prune

    _event(org, "run.succeeded", schedule=None, when=NOW - timedelta(days=40), duration_ms=5)
    _event(org, "run.succeeded", schedule=None, when=NOW - timedelta(days=10), duration_ms=5)
    _event(org, "run.succeeded", schedule=None, when=NOW - timedelta(hours=1), duration_ms=5)
    events_process()
    assert observability_prune(now=NOW) == {
        "minute_rows": 2,
        "hour_rows": 1,
        "webhook_deliveries": 0,
        "alert_emails": 0,
    }
    assert metrics_summary(organization=org, window="7d", now=NOW).counts.succeeded == 1
    assert metrics_summary(organization=org, window="31d", now=NOW).counts.succeeded == 2
    assert _total(org).succeeded == 3


# The same batch of events, added twice, on PostgreSQL (this process: one statement per batch) and on SQLite (the
# embedded default, a child process: one statement per row) must give the same rollup rows.
_ROLLUP_EVENTS = textwrap.dedent(
    """
    from datetime import UTC, datetime

    from echoflow.events.models import OutboxEvent
    from echoflow.observability.models import ROLLUP_COLUMNS, MetricRollup
    from echoflow.observability.rollups import rollups_apply

    T = datetime(2026, 12, 2, 10, 15, 30, tzinfo=UTC)


    def rollup_events():
        def event(type, minute, org, schedule, attempt, **data):
            return OutboxEvent(type=type, occurred_at=T.replace(minute=minute), organization_id=org,
                               schedule_id=schedule, run_id=1, attempt=attempt, data=data)
        return [
            event("run.started", 15, 7, 3, 1, lag_ms=120),
            event("run.succeeded", 15, 7, 3, 1, duration_ms=40),
            event("run.started", 16, 7, 4, 1, lag_ms=5000),
            event("run.failed", 16, 7, 4, 1, duration_ms=900),
            event("run.started", 15, 8, None, 2, lag_ms=1),  # a retry's start: no trigger, no lag
            event("run.retrying", 15, 8, None, 2),
            event("run.queued", 15, 8, None, 1),  # counts nowhere
        ]


    def rollup_rows():
        return sorted(
            [row.resolution, row.start.isoformat(), row.organization_id, row.schedule_id,
             *(getattr(row, c) for c in ROLLUP_COLUMNS)]
            for row in MetricRollup.objects.all()
        )
    """
)

_SQLITE_ROLLUPS = (
    textwrap.dedent(
        """
    import json

    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    """
    )
    + _ROLLUP_EVENTS
    + textwrap.dedent(
        """
    written = [rollups_apply(rollup_events()), rollups_apply(rollup_events())]
    print(json.dumps({"written": written, "rows": rollup_rows()}))
    """
    )
)


def test_a_batch_is_rolled_up_in_one_statement_and_the_same_as_on_sqlite(tmp_path: Any) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    scope: dict[str, Any] = {}
    exec(_ROLLUP_EVENTS, scope)  # the shared test data above, which the SQLite child runs too
    written = []
    for _ in range(2):  # the second batch adds to the rows the first one made
        with CaptureQueriesContext(connection) as queries:
            written.append(scope["rollups_apply"](scope["rollup_events"]()))
        assert [q["sql"].split()[0] for q in queries.captured_queries] == ["INSERT"]
    rows = scope["rollup_rows"]()
    # minute + hour for each of the two schedules, minute + hour + all-time for each organization.
    assert written == [11, 11]
    names = ["resolution", "start", "org", "schedule", *ROLLUP_COLUMNS]
    columns = dict(zip(names, next(r for r in rows if r[0] == "total" and r[2] == 7), strict=True))
    assert (columns["triggers"], columns["succeeded"], columns["failed"]) == (4, 2, 2)
    assert (columns["lag_count"], columns["lag_sum_ms"], columns["duration_sum_ms"]) == (4, 10_240, 1_880)
    columns_8 = dict(zip(names, next(r for r in rows if r[0] == "total" and r[2] == 8), strict=True))
    assert (columns_8["triggers"], columns_8["retried"], columns_8["lag_count"]) == (0, 2, 0)

    sqlite = embedded_child(_SQLITE_ROLLUPS, tmp_path)
    assert sqlite["written"] == written
    assert [[*r[:1], datetime.fromisoformat(r[1]), *r[2:]] for r in sqlite["rows"]] == [
        [*r[:1], datetime.fromisoformat(r[1]), *r[2:]] for r in rows
    ]
