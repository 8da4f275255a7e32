"""/api/v1/metrics/summary: the organization's or one schedule's figures over a window, and the per-schedule
breakdown, read from the rollups the event processor writes; bad windows, schedules and parameters are named."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from rest_framework.test import APIClient

from echoflow.accounts.models import Organization
from echoflow.events.bus import EventSpec, event_record
from echoflow.observability.processor import events_process
from schedules.models import Schedule
from schedules.services import schedule_delete
from tests.test_api_helpers import (
    API,
    _fresh_rate_limits,  # noqa: F401
    client_for,
    make_schedule,
)

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 23, 12, 30, 41, tzinfo=UTC)
SUMMARY = f"{API}/metrics/summary/"
BY_SCHEDULE = f"{API}/metrics/summary/by-schedule/"


@pytest.fixture
def viewer(org: Organization) -> APIClient:
    return client_for(org, "viewer")


def _event(org: Organization, kind: str, schedule: Schedule | None, when: datetime, **data: Any) -> None:
    event_record(
        EventSpec(
            type=kind,
            organization_id=org.pk,
            schedule_id=schedule.pk if schedule else None,
            run_id=1,
            attempt=data.pop("attempt", 1),
            data=data,
        ),
        occurred_at=when,
    )


def _history(org: Organization) -> tuple[Schedule, Schedule]:
    """Schedule a: 4 triggers, 3 succeeded, 1 failed, 1 timed out; b: 1 triggered and succeeded; an ad-hoc failure;
    and older runs of a outside 24 h."""
    a = make_schedule(org, "a")
    b = make_schedule(org, "b")
    recent = NOW - timedelta(hours=2)
    for _ in range(4):
        _event(org, "run.started", a, recent, lag_ms=100)
    for duration in (80, 90, 200):
        _event(org, "run.succeeded", a, recent, duration_ms=duration)
    _event(org, "run.failed", a, recent, duration_ms=4000, error="boom")
    _event(org, "run.timed_out", a, recent, duration_ms=30_000)
    _event(org, "run.retrying", a, recent, duration_ms=10)
    _event(org, "run.started", b, recent, lag_ms=40)
    _event(org, "run.succeeded", b, recent, duration_ms=100)
    _event(org, "run.failed", None, recent, duration_ms=100)
    for _ in range(5):
        _event(org, "run.succeeded", a, NOW - timedelta(hours=30), duration_ms=100)
    events_process()
    return a, b


def _get(client: APIClient, path: str, params: dict[str, Any] | None = None) -> Any:
    with time_machine.travel(NOW, tick=False):
        return client.get(path, params or {})


def test_the_organization_summary_counts_every_run_of_the_last_24_hours(org: Organization, viewer: APIClient) -> None:
    _history(org)
    response = _get(viewer, SUMMARY)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body == {
        "window": "24h",
        "from": "2026-11-22T12:30:00Z",  # the whole minute
        "to": "2026-11-23T12:30:41Z",
        "organization": org.pk,
        "schedule": None,
        "schedule_name": None,
        "triggers": 5,
        "runs": {"succeeded": 4, "failed": 2, "timed_out": 1, "cancelled": 0, "skipped": 0},
        "retries": 1,
        "success_rate": 0.5714,
        "failure_rate": 0.4286,
        # 80, 90, 100, 100, 200, 4000, 30000 ms: p50 in the 50-100 ms bucket (rank 3.5 of its 4), p95 in 10-30 s.
        "duration_ms": {"p50": 93.8, "p95": 23_000.0, "count": 7, "mean": 4938.6},
        # Lags 40 and 4 x 100 ms: rank 4.75 is 3.75 of the 4 in the 50-100 ms bucket.
        "trigger_lag_ms": {"p95": 96.9, "count": 5, "mean": 88.0},
    }
    assert _get(viewer, SUMMARY, {"window": "24h"}).json() == body  # 24h is the default


def test_one_schedules_summary_and_a_longer_window(org: Organization, viewer: APIClient) -> None:
    a, _ = _history(org)
    body = _get(viewer, SUMMARY, {"schedule": a.pk}).json()
    assert (body["schedule"], body["schedule_name"], body["triggers"]) == (a.pk, "a", 4)
    assert body["runs"] == {"succeeded": 3, "failed": 1, "timed_out": 1, "cancelled": 0, "skipped": 0}
    assert (body["success_rate"], body["failure_rate"]) == (0.6, 0.4)
    # Durations 80, 90, 200, 4000, 30000 ms: estimated from the histogram buckets (docs/observability.md §3).
    assert body["duration_ms"] == {"p50": 175.0, "p95": 25_000.0, "count": 5, "mean": 6874.0}

    week = _get(viewer, SUMMARY, {"schedule": a.pk, "window": "7d"}).json()
    assert week["runs"]["succeeded"] == 8  # the 30-hour-old runs are in
    assert (week["window"], week["from"]) == ("7d", "2026-11-16T12:00:00Z")  # hour rows: the whole hour


def test_the_breakdown_lists_schedules_most_triggered_first(org: Organization, viewer: APIClient) -> None:
    a, b = _history(org)
    body = _get(viewer, BY_SCHEDULE).json()
    assert (body["window"], body["from"], body["to"]) == ("24h", "2026-11-22T12:00:00Z", "2026-11-23T12:30:41Z")
    assert (body["organization"], body["total"]) == (org.pk, 2)
    assert [(s["schedule"], s["schedule_name"], s["triggers"]) for s in body["schedules"]] == [
        (a.pk, "a", 4),
        (b.pk, "b", 1),
    ]
    assert body["schedules"][1]["success_rate"] == 1.0

    top = _get(viewer, BY_SCHEDULE, {"limit": 1}).json()
    assert (top["total"], [s["schedule"] for s in top["schedules"]]) == (2, [a.pk])

    b_id = b.pk
    schedule_delete(schedule=b)  # its figures stay, without a name
    after = _get(viewer, BY_SCHEDULE).json()
    assert [(s["schedule"], s["schedule_name"]) for s in after["schedules"]] == [(a.pk, "a"), (b_id, None)]


def test_an_empty_window_answers_zeros_and_nulls(org: Organization, viewer: APIClient) -> None:
    body = _get(viewer, SUMMARY, {"window": "15m"}).json()
    assert (body["triggers"], body["success_rate"], body["duration_ms"]["p95"]) == (0, None, None)
    assert _get(viewer, BY_SCHEDULE).json()["schedules"] == []


@pytest.mark.parametrize(
    ("window", "reason"),
    [
        ("24", "'24' is not a duration like 15m, 24h or 7d"),
        ("1y", "'1y' is not a duration like 15m, 24h or 7d"),
        ("0m", "'0m' must be between 1m and 31d"),
        ("32d", "'32d' must be between 1m and 31d"),
        ("-1h", "'-1h' is not a duration like 15m, 24h or 7d"),
    ],
)
def test_a_bad_window_is_a_400_naming_the_window(viewer: APIClient, window: str, reason: str) -> None:
    for path in (SUMMARY, BY_SCHEDULE):
        response = viewer.get(path, {"window": window})
        assert response.status_code == 400
        assert response.json() == {
            "detail": f"The request is invalid (window: {reason}).",
            "code": "invalid",
            "errors": {"window": [reason]},
        }


def test_a_bad_schedule_is_a_400_and_another_organizations_is_a_404(
    org: Organization, other_org: Organization, viewer: APIClient
) -> None:
    for bad in ("abc", "0", "1.5"):
        response = viewer.get(SUMMARY, {"schedule": bad})
        assert response.status_code == 400
        assert list(response.json()["errors"]) == ["schedule"]
    theirs = make_schedule(other_org, "theirs")
    foreign = viewer.get(SUMMARY, {"schedule": theirs.pk})
    missing = viewer.get(SUMMARY, {"schedule": 10**9})
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json()
    assert foreign.json() == {"detail": "Not found: there is no such object here.", "code": "not_found", "errors": {}}
    gone = make_schedule(org, "gone")
    gone_id = gone.pk
    schedule_delete(schedule=gone)
    assert viewer.get(SUMMARY, {"schedule": gone_id}).status_code == 404


def test_unknown_parameters_are_named_not_ignored(org: Organization, viewer: APIClient) -> None:
    response = viewer.get(SUMMARY, {"by": "schedule", "windw": "7d", "window": "1y"})
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert set(errors) == {"by", "windw", "window"}
    assert errors["by"] == [
        "is not a parameter of this endpoint, which takes schedule, window; "
        "the figures per schedule are GET /api/v1/metrics/summary/by-schedule/"
    ]
    assert errors["windw"] == ["is not a parameter of this endpoint, which takes schedule, window"]
    assert viewer.get(BY_SCHEDULE, {"schedule": 1}).json()["errors"] == {
        "schedule": ["is not a parameter of this endpoint, which takes limit, window"]
    }
    assert viewer.get(BY_SCHEDULE, {"limit": 0}).json()["errors"] == {
        "limit": ["Ensure this value is greater than or equal to 1."]
    }
    # The organization parameter of session requests is not "unknown".
    assert viewer.get(SUMMARY, {"org": org.slug}).status_code == 200
