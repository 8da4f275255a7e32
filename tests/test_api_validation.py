"""Every validation rule of a schedule (schedules.validation.schedule_clean, schedules.triggers.trigger_validate,
runs.actions.action_validate) and of the body itself, answered as JSON naming the field, with nothing written."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from echoflow.accounts.models import Organization
from schedules.models import Schedule
from tests.test_api_helpers import (
    API,
    _fresh_rate_limits,  # noqa: F401
    error_fields,
    make_schedule,
    row_counts,
    schedule_data,
)

pytestmark = pytest.mark.django_db


# --- validation: every rule of schedule_clean, action_validate and trigger_validate -----------------------------------
LONG = "x" * 201
CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("unknown field", {"colour": "red"}, "colour", "is not a schedule field"),
    ("name missing", {"name": ""}, "name", "is required"),
    ("name not text", {"name": 5}, "name", "must be text"),
    ("name too long", {"name": LONG}, "name", "is 201 characters long; the limit is 200"),
    ("description too long", {"description": "d" * 4001}, "description", "the limit is 4000"),
    ("agent too long", {"agent": "a" * 101}, "agent", "the limit is 100"),
    ("timezone too long", {"timezone": "Z" * 65}, "timezone", "the limit is 64"),
    ("action name too long", {"action_name": LONG}, "action_name", "the limit is 200"),
    ("integer not a number", {"max_attempts": "many"}, "max_attempts", "must be a whole number; got 'many'"),
    ("integer is a boolean", {"priority": True}, "priority", "must be a whole number"),
    ("integer is a fraction", {"timeout_seconds": 1.5}, "timeout_seconds", "must be a whole number"),
    ("priority out of range", {"priority": 10}, "priority", "must be between 0 and 9; got 10"),
    ("max attempts out of range", {"max_attempts": 0}, "max_attempts", "must be between 1 and 100"),
    ("jitter out of range", {"jitter_seconds": 86401}, "jitter_seconds", "between 0 and 86400"),
    ("concurrency out of range", {"max_concurrency": 0}, "max_concurrency", "between 1 and 10000"),
    ("max runs below one", {"max_runs": 0}, "max_runs", "must be at least 1; got 0"),
    ("date-time unreadable", {"start_at": "next week"}, "start_at", "is not an ISO-8601 date-time"),
    ("date-time without offset", {"end_at": "2030-01-01T00:00:00"}, "end_at", "needs a UTC offset"),
    ("end before start", {"start_at": "2030-01-02T00:00:00Z", "end_at": "2030-01-01T00:00:00Z"}, "end_at", "after"),
    ("negative delay", {"delay_seconds": -5}, "delay_seconds", "between 0 and"),
    ("misfire policy", {"misfire_policy": "later"}, "misfire_policy", "must be one of coalesce, all, skip"),
    ("overlap policy", {"overlap_policy": "queue"}, "overlap_policy", "must be one of skip, buffer_one"),
    ("backoff not a list", {"backoff_seconds": 30}, "backoff_seconds", "non-empty list of whole seconds"),
    ("backoff negative", {"backoff_seconds": [30, -1]}, "backoff_seconds", "non-empty list of whole seconds"),
    ("labels not an object", {"labels": ["a"]}, "labels", "must be an object of name: value"),
    ("config not an object", {"action_config": [1]}, "action_config", "must be a JSON object"),
    ("trigger kind", {"trigger_kind": "hourly"}, "trigger_kind", "'hourly' is not one of once, interval, cron"),
    ("unknown time zone", {"timezone": "Mars/Olympus"}, "timezone", "is not a known IANA time zone"),
    ("time zone typo", {"timezone": "europe/berlin"}, "timezone", "did you mean Europe/Berlin"),
    ("cron missing", {"cron": ""}, "cron", "is required for a cron trigger"),
    ("cron invalid", {"cron": "0 25 * * *"}, "cron", "hour: 25 is outside 0-23"),
    ("cron too frequent", {"cron": "*/5 * * * * *"}, "cron", "below the minimum interval"),
    ("interval missing", {"trigger_kind": "interval", "cron": ""}, "interval_seconds", "is required for an interval"),
    ("interval too short", {"trigger_kind": "interval", "interval_seconds": 5}, "interval_seconds", "below the min"),
    ("interval too long", {"trigger_kind": "interval", "interval_seconds": 10**8}, "interval_seconds", "above the max"),
    ("once without instant", {"trigger_kind": "once"}, "run_at", "is required for a once trigger"),
    ("once in the past", {"trigger_kind": "once", "run_at": "2020-01-01T00:00:00Z"}, "run_at", "is in the past"),
    ("action kind", {"action_kind": "shell"}, "action_kind", "'shell' is not one of python, http, event, celery"),
    ("python action unknown", {"action_name": "os.system"}, "action_name", "is not a registered action"),
    ("http without url", {"action_kind": "http", "action_name": ""}, "action_config", "an http action needs a 'url'"),
    (
        "http relative url",
        {"action_kind": "http", "action_config": {"url": "/hook"}},
        "action_config",
        "must be an absolute http:// or https:// URL",
    ),
    (
        "http method",
        {"action_kind": "http", "action_config": {"url": "https://example.com", "method": "BREW"}},
        "action_config",
        "is not one of GET, POST",
    ),
    (
        "http headers",
        {"action_kind": "http", "action_config": {"url": "https://example.com", "headers": ["a"]}},
        "action_config",
        "headers must be an object",
    ),
    ("event without type", {"action_kind": "event", "action_name": ""}, "action_name", "needs the event type"),
    ("celery without task", {"action_kind": "celery", "action_name": ""}, "action_name", "needs the task name"),
]


@pytest.mark.parametrize(("case", "change", "field", "message"), CASES, ids=[c[0] for c in CASES])
def test_create_rejects_with_a_message_naming_the_field_and_writes_nothing(
    org: Organization, editor: APIClient, case: str, change: dict[str, Any], field: str, message: str
) -> None:
    before = row_counts()
    response = editor.post(f"{API}/schedules/", {**schedule_data(), **change}, format="json")
    assert response.status_code == 400, response.content
    errors = error_fields(response)
    assert message in errors[field][0], errors
    assert response.json()["code"] == "invalid" and field in response.json()["detail"]
    assert row_counts() == before


def test_duplicate_name_is_rejected_and_nothing_written(org: Organization, editor: APIClient) -> None:
    make_schedule(org, "nightly")
    before = row_counts()
    response = editor.post(f"{API}/schedules/", schedule_data("nightly"), format="json")
    assert response.status_code == 400
    assert error_fields(response)["name"] == ["a schedule named 'nightly' already exists in this organization"]
    assert row_counts() == before


def test_several_bad_fields_are_all_named(editor: APIClient) -> None:
    response = editor.post(
        f"{API}/schedules/", schedule_data(priority=12, timezone="Nowhere", misfire_policy="x"), format="json"
    )
    assert set(error_fields(response)) == {"priority", "timezone", "misfire_policy"}


def test_a_rejected_update_changes_nothing(org: Organization, editor: APIClient) -> None:
    schedule = make_schedule(org)
    before = row_counts()
    response = editor.patch(
        f"{API}/schedules/{schedule.pk}/", {"cron": "0 2 * * *", "priority": 99, "version": 1}, format="json"
    )
    assert response.status_code == 400 and "priority" in error_fields(response)
    schedule.refresh_from_db()
    assert (schedule.priority, schedule.version) == (5, 1)
    assert row_counts() == before


# --- the body itself --------------------------------------------------------------------------------------------------
def test_a_body_over_the_limit_is_413_and_writes_nothing(editor: APIClient) -> None:
    before = row_counts()
    response = editor.post(f"{API}/schedules/", schedule_data(payload={"blob": "x" * (64 * 1024)}), format="json")
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert "65536 bytes" in response.json()["detail"]
    assert row_counts() == before


@pytest.mark.parametrize(
    ("raw", "content_type", "status", "where"),
    [
        (b"[1, 2]", "application/json", 400, "non_field_errors"),
        (b'{"name": ', "application/json", 400, None),
        (b'{"name": "a\\u0000b"}', "application/json", 400, "name"),
        (b'{"name": "a", "payload": {"k": "\\ud800"}}', "application/json", 400, "payload.k"),
        (b'{"name": NaN}', "application/json", 400, None),
        (b"name=x", "application/x-www-form-urlencoded", 415, None),
    ],
)
def test_bodies_that_are_not_a_storable_json_object_are_refused(
    editor: APIClient, raw: bytes, content_type: str, status: int, where: str | None
) -> None:
    response = editor.generic("POST", f"{API}/schedules/", raw.decode(), content_type=content_type)
    assert response.status_code == status, response.content
    if where:
        assert where in response.json()["errors"]
    assert Schedule.objects.count() == 0


@pytest.mark.parametrize(
    "instant",
    [
        "2030-01-01T00:00:00-17:35",  # Python takes offsets up to ±24 h; PostgreSQL stores only ±15:59
        "9999-12-31T23:00:00-14:00",  # past the year 9999 once in UTC
    ],
)
def test_instants_the_database_cannot_hold_are_a_400_not_a_500(editor: APIClient, instant: str) -> None:
    before = row_counts()
    response = editor.post(
        f"{API}/schedules/",
        schedule_data(trigger_kind="interval", interval_seconds=60, start_at=instant),
        format="json",
    )
    assert response.status_code == 400, response.content
    assert response.json()["code"] in {"invalid", "out_of_range"}
    assert row_counts() == before
