"""/api/v1/runs/: list with filters, get with attempts, retry, cancel, the external executor's report, and ad-hoc
runs with an Idempotency-Key."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from echoflow.accounts.models import Organization
from echoflow.audit.models import AuditEntry
from echoflow.events.models import OutboxEvent
from runs.models import AttemptOutcome, Run, RunAttempt, RunStatus, RunTrigger
from schedules.models import Schedule
from tests.test_api_helpers import (
    API,
    _fresh_rate_limits,  # noqa: F401
    client_for,
    make_schedule,
    queued_run,
    run_in,
    running_event_run,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(org: Organization) -> APIClient:
    return client_for(org, "operator")


def _ids(response: Any) -> list[int]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


def test_list_filters_by_status_schedule_agent_trigger_and_time(org: Organization, operator: APIClient) -> None:
    eu = make_schedule(org, "eu", agent="eu-1")
    us = make_schedule(org, "us", agent="us-1")
    failed = queued_run(org, eu)
    Run.objects.filter(pk=failed.pk).update(status=RunStatus.FAILED)
    manual = queued_run(org, us)
    old = queued_run(org, us)
    Run.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=3), trigger=RunTrigger.BACKFILL)

    assert _ids(operator.get(f"{API}/runs/")) == [manual.pk, failed.pk, old.pk]
    assert _ids(operator.get(f"{API}/runs/?status=failed")) == [failed.pk]
    assert _ids(operator.get(f"{API}/runs/?status=failed&status=queued")) == [manual.pk, failed.pk, old.pk]
    assert _ids(operator.get(f"{API}/runs/?schedule={us.pk}")) == [manual.pk, old.pk]
    assert _ids(operator.get(f"{API}/runs/?agent=eu-1")) == [failed.pk]
    assert _ids(operator.get(f"{API}/runs/?trigger=backfill")) == [old.pk]
    since = (timezone.now() - timedelta(days=1)).isoformat()
    assert _ids(operator.get(f"{API}/runs/", {"created_after": since})) == [manual.pk, failed.pk]
    assert _ids(operator.get(f"{API}/runs/", {"created_before": since})) == [old.pk]


def test_a_run_keeps_the_agent_its_schedule_had_when_it_was_made(org: Organization, operator: APIClient) -> None:
    schedule = make_schedule(org, "export", agent="eu-1")
    before = queued_run(org, schedule)
    Schedule.objects.filter(pk=schedule.pk).update(agent="eu-2")  # the schedule moves to another agent
    schedule.refresh_from_db()
    after = queued_run(org, schedule)
    adhoc = client_for(org, "editor").post(
        f"{API}/runs/", {"action_kind": "python", "action_name": "echoflow.noop"}, format="json"
    )
    assert adhoc.status_code == 201, adhoc.content

    assert _ids(operator.get(f"{API}/runs/?agent=eu-1")) == [before.pk]
    assert _ids(operator.get(f"{API}/runs/?agent=eu-2")) == [after.pk]
    rows = {row["id"]: row["agent"] for row in operator.get(f"{API}/runs/").json()["results"]}
    assert rows == {before.pk: "eu-1", after.pk: "eu-2", adhoc.json()["id"]: ""}
    assert operator.get(f"{API}/runs/{before.pk}/").json()["agent"] == "eu-1"


def test_list_refuses_unknown_filter_values(operator: APIClient) -> None:
    response = operator.get(f"{API}/runs/?status=exploded&schedule=abc")
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"status", "schedule"}


def test_another_organizations_runs_are_invisible_even_by_filter(
    org: Organization, other_org: Organization, operator: APIClient
) -> None:
    theirs = make_schedule(other_org, "theirs")
    queued_run(other_org, theirs)
    assert _ids(operator.get(f"{API}/runs/?schedule={theirs.pk}")) == []


def test_get_includes_the_attempt_log(org: Organization, operator: APIClient) -> None:
    run = run_in(org, RunStatus.FAILED, attempts=2, error="boom")
    now = timezone.now()
    RunAttempt.objects.create(run=run, number=1, started_at=now, outcome=AttemptOutcome.FAILED, error="timeout")
    RunAttempt.objects.create(run=run, number=2, started_at=now, outcome=AttemptOutcome.FAILED, error="boom")
    body = operator.get(f"{API}/runs/{run.pk}/").json()
    assert body["status"] == "failed" and body["schedule_name"] == run.schedule.name  # type: ignore[union-attr]
    assert [(a["number"], a["error"]) for a in body["attempt_log"]] == [(1, "timeout"), (2, "boom")]


def test_retry_reopens_a_failed_run_and_refuses_a_queued_one(org: Organization, operator: APIClient) -> None:
    run = run_in(org, RunStatus.FAILED, attempts=3, finished_at=timezone.now())
    response = operator.post(f"{API}/runs/{run.pk}/retry/")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "queued" and response.json()["status_reason"] == "retried by hand"
    again = operator.post(f"{API}/runs/{run.pk}/retry/")
    assert again.status_code == 409
    assert again.json() == {
        "detail": f"run {run.pk} is queued; only failed, timed-out or cancelled runs can be retried",
        "code": "invalid_state",
        "errors": {},
    }
    assert AuditEntry.objects.filter(action="run.retry").count() == 1


def test_cancel_with_a_reason_and_not_twice(org: Organization, operator: APIClient) -> None:
    run = queued_run(org)
    response = operator.post(f"{API}/runs/{run.pk}/cancel/", {"reason": "wrong payload"}, format="json")
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["status_reason"]) == ("cancelled", "wrong payload")
    again = operator.post(f"{API}/runs/{run.pk}/cancel/")
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]
    assert AuditEntry.objects.get(action="run.cancel").changes == {"reason": "wrong payload"}


# --- the report of an external executor -------------------------------------------------------------------------------
def test_report_success_finishes_the_run_and_its_attempt(org: Organization, operator: APIClient) -> None:
    run = running_event_run(org)
    response = operator.post(
        f"{API}/runs/{run.pk}/report/", {"status": "succeeded", "output": {"rows": 3}}, format="json"
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["status"], body["output"]) == ("succeeded", {"rows": 3})
    assert body["attempt_log"][0]["outcome"] == "succeeded" and body["attempt_log"][0]["finished_at"]
    assert OutboxEvent.objects.filter(type="run.succeeded", run_id=run.pk).exists()
    assert AuditEntry.objects.get(action="run.report").changes == {"status": "succeeded", "attempt": 1}


def test_report_failure_follows_the_retry_policy(org: Organization, operator: APIClient) -> None:
    retrying = running_event_run(org, max_attempts=3)
    response = operator.post(
        f"{API}/runs/{retrying.pk}/report/", {"status": "failed", "error": "disk full"}, format="json"
    )
    assert (response.json()["status"], response.json()["error"]) == ("retrying", "disk full")
    assert response.json()["next_attempt_at"] is not None
    final = running_event_run(org, max_attempts=1)
    response = operator.post(
        f"{API}/runs/{final.pk}/report/", {"status": "failed", "error": "disk full"}, format="json"
    )
    assert response.json()["status"] == "failed"
    assert response.json()["attempt_log"][0]["outcome"] == "failed"


def test_report_on_a_run_that_is_not_running_is_409_and_changes_nothing(org: Organization, operator: APIClient) -> None:
    run = running_event_run(org)
    operator.post(f"{API}/runs/{run.pk}/report/", {"status": "succeeded"}, format="json")
    late = operator.post(f"{API}/runs/{run.pk}/report/", {"status": "failed", "error": "late"}, format="json")
    assert late.status_code == 409 and "only a running run takes a report" in late.json()["detail"]
    assert Run.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED
    python_run = run_in(org, RunStatus.RUNNING)
    refused = operator.post(f"{API}/runs/{python_run.pk}/report/", {"status": "succeeded"}, format="json")
    assert refused.status_code == 409 and "only event runs take reports" in refused.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"status": "done"}, "status", "'done' is not one of succeeded, failed"),
        ({}, "status", "required"),
        ({"status": "failed", "error": "e" * 8001}, "error", "the limit is 8000"),
    ],
)
def test_report_names_a_bad_field_and_changes_nothing(
    org: Organization, operator: APIClient, body: dict[str, Any], field: str, message: str
) -> None:
    run = running_event_run(org)
    response = operator.post(f"{API}/runs/{run.pk}/report/", body, format="json")
    assert response.status_code == 400
    assert message in response.json()["errors"][field][0]
    assert Run.objects.get(pk=run.pk).status == RunStatus.RUNNING
    assert RunAttempt.objects.get(run=run).outcome == AttemptOutcome.RUNNING


# --- ad-hoc runs ------------------------------------------------------------------------------------------------------
def test_adhoc_run_is_queued_without_a_schedule(org: Organization) -> None:
    editor = client_for(org, "editor")
    response = editor.post(
        f"{API}/runs/",
        {"action_kind": "python", "action_name": "echoflow.echo", "payload": {"to": "ops"}, "max_attempts": 2},
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["schedule"], body["status"], body["trigger"], body["payload"]) == (
        None,
        "queued",
        "api",
        {"to": "ops"},
    )
    assert AuditEntry.objects.get(action="run.create").actor_label == "token:editor-0"


def test_adhoc_run_idempotency_key(org: Organization) -> None:
    editor = client_for(org, "editor")
    body = {"action_kind": "python", "action_name": "echoflow.echo", "payload": [1]}
    first = editor.post(f"{API}/runs/", body, format="json", HTTP_IDEMPOTENCY_KEY="job-1")
    second = editor.post(f"{API}/runs/", body, format="json", HTTP_IDEMPOTENCY_KEY="job-1")
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    different = editor.post(f"{API}/runs/", {**body, "payload": [2]}, format="json", HTTP_IDEMPOTENCY_KEY="job-1")
    assert different.status_code == 409 and "different run" in different.json()["detail"]
    assert Run.objects.count() == 1


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"action_name": "os.system"}, "action_name", "is not a registered action"),
        ({"action_kind": "shell"}, "action_kind", "'shell' is not one of python, http, event, celery"),
        ({"max_attempts": 0}, "max_attempts", "must be between 1 and 100"),
        ({"timeout_seconds": 10**7}, "timeout_seconds", "must be between 1 and 604800"),
        ({"priority": 10}, "priority", "must be between 0 and 9"),
        ({"priority": "high"}, "priority", "valid integer"),
        ({"action_config": [1]}, "action_config", "dictionary"),
        ({"action_name": "n" * 201}, "action_name", "200 characters"),
    ],
)
def test_adhoc_run_rejects_with_a_message_and_writes_nothing(
    org: Organization, change: dict[str, Any], field: str, message: str
) -> None:
    editor = client_for(org, "editor")
    before = (Run.objects.count(), AuditEntry.objects.count(), Schedule.objects.count())
    response = editor.post(
        f"{API}/runs/", {"action_kind": "python", "action_name": "echoflow.noop", **change}, format="json"
    )
    assert response.status_code == 400, response.content
    assert message in response.json()["errors"][field][0]
    assert (Run.objects.count(), AuditEntry.objects.count(), Schedule.objects.count()) == before
