"""/api/v1/schedules/: CRUD, filters and paging, safe concurrent edits, enable/disable, run-now, backfill, runs,
and preview. The validation rules themselves: tests/test_api_validation.py."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from echoflow.accounts.models import Organization
from echoflow.audit.models import AuditEntry
from runs.models import Run, RunTrigger
from schedules.models import Schedule, ScheduleState
from schedules.services import schedule_cancel, schedule_pause
from tests.test_api_helpers import (
    API,
    _fresh_rate_limits,  # noqa: F401
    client_for,
    error_fields,
    make_schedule,
    row_counts,
    schedule_data,
)

pytestmark = pytest.mark.django_db


# --- create, read, list -----------------------------------------------------------------------------------------------
def test_create_returns_the_schedule_and_records_who_did_it(org: Organization, editor: APIClient) -> None:
    response = editor.post(
        f"{API}/schedules/",
        schedule_data("report", cron="0 8 * * 1-5", timezone="Asia/Shanghai", labels={"team": "bi"}),
        format="json",
        HTTP_X_REQUEST_ID="req-42",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "report" and body["state"] == "active" and body["version"] == 1
    assert body["trigger_description"] == "cron 0 8 * * 1-5 (Asia/Shanghai)"
    assert response["ETag"] == '"1"'
    schedule = Schedule.objects.get(pk=body["id"])
    assert schedule.organization == org and schedule.created_by is not None
    entry = AuditEntry.objects.get(action="schedule.create")
    assert (entry.actor_id, entry.actor_label, entry.source, entry.request_id) == (
        schedule.created_by.pk,
        "token:editor-0",
        "api",
        "req-42",
    )
    assert entry.organization_id == org.pk and entry.target_id == str(schedule.pk)


def test_get_carries_the_version_as_etag(org: Organization, editor: APIClient) -> None:
    schedule = make_schedule(org)
    response = editor.get(f"{API}/schedules/{schedule.pk}/")
    assert response.status_code == 200
    assert response.json()["name"] == "nightly" and response["ETag"] == '"1"'


def test_list_filters_by_state_agent_label_trigger_kind_and_text(org: Organization, editor: APIClient) -> None:
    make_schedule(org, "billing export", agent="eu-1", labels={"team": "billing", "tier": "gold"})
    make_schedule(org, "cleanup", agent="us-1", labels={"team": "ops"}, description="drops old billing rows")
    paused = make_schedule(org, "ping", trigger_kind="interval", cron="", interval_seconds=60)
    schedule_pause(schedule=paused, note="noisy")

    def names(query: str) -> list[str]:
        response = editor.get(f"{API}/schedules/?{query}")
        assert response.status_code == 200, response.content
        return [row["name"] for row in response.json()["results"]]

    assert names("") == ["billing export", "cleanup", "ping"]
    assert names("state=paused") == ["ping"]
    assert names("agent=eu-1") == ["billing export"]
    assert names("label=tier") == ["billing export"]
    assert names("label=team=ops") == ["cleanup"]
    assert names("trigger_kind=interval") == ["ping"]
    assert names("q=BILLING") == ["billing export", "cleanup"]
    assert names("ordering=-name") == ["ping", "cleanup", "billing export"]


def test_label_filter_matches_number_boolean_and_object_values_by_their_text(
    org: Organization, editor: APIClient
) -> None:
    make_schedule(org, "web", labels={"replicas": 3, "canary": True, "owner": {"team": "ops"}, "tier": "3"})
    make_schedule(org, "db", labels={"replicas": 30, "canary": False})

    def names(label: str) -> list[str]:
        response = editor.get(f"{API}/schedules/", {"label": label})
        assert response.status_code == 200, response.content
        return [row["name"] for row in response.json()["results"]]

    assert names("replicas=3") == ["web"]
    assert names("canary=true") == ["web"]
    assert names("canary=false") == ["db"]
    assert names('owner={"team": "ops"}') == ["web"]
    assert names("tier=3") == ["web"]
    assert names("replicas=nobody") == []
    assert names("missing=3") == []


def test_list_filter_values_are_checked(editor: APIClient) -> None:
    response = editor.get(f"{API}/schedules/?state=sleeping")
    assert response.status_code == 400
    assert "sleeping" in error_fields(response)["state"][0]


def test_list_pages_with_a_cursor_without_repeats(org: Organization, editor: APIClient) -> None:
    for index in range(5):
        make_schedule(org, f"s{index}")
    seen: list[str] = []
    url: str | None = f"{API}/schedules/?page_size=2"
    while url:
        body = editor.get(url).json()
        seen += [row["name"] for row in body["results"]]
        url = body["next"]
    assert seen == ["s0", "s1", "s2", "s3", "s4"]


def test_another_organizations_schedules_are_not_listed(
    org: Organization, other_org: Organization, editor: APIClient
) -> None:
    make_schedule(other_org, "theirs")
    assert editor.get(f"{API}/schedules/").json()["results"] == []


# --- updates: version, If-Match, PUT ----------------------------------------------------------------------------------
def test_patch_with_the_current_version_changes_and_bumps_it(org: Organization, editor: APIClient) -> None:
    schedule = make_schedule(org)
    response = editor.patch(f"{API}/schedules/{schedule.pk}/", {"cron": "30 3 * * *", "version": 1}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["cron"] == "30 3 * * *" and response.json()["version"] == 2
    assert response["ETag"] == '"2"'
    entry = AuditEntry.objects.get(action="schedule.update")
    assert entry.changes == {"cron": {"before": "0 2 * * *", "after": "30 3 * * *"}}


def test_patch_with_a_stale_version_is_409_and_changes_nothing(org: Organization, editor: APIClient) -> None:
    schedule = make_schedule(org)
    editor.patch(f"{API}/schedules/{schedule.pk}/", {"description": "first", "version": 1}, format="json")
    before = row_counts()
    response = editor.patch(f"{API}/schedules/{schedule.pk}/", {"description": "second", "version": 1}, format="json")
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "version_conflict" and body["current_version"] == 2
    assert "changed by someone else" in body["detail"]
    schedule.refresh_from_db()
    assert (schedule.description, schedule.version) == ("first", 2)
    assert row_counts() == before


def test_if_match_carries_the_version(org: Organization, editor: APIClient) -> None:
    schedule = make_schedule(org)
    ok = editor.patch(f"{API}/schedules/{schedule.pk}/", {"agent": "a1"}, format="json", HTTP_IF_MATCH='"1"')
    assert ok.status_code == 200 and ok.json()["version"] == 2
    stale = editor.patch(f"{API}/schedules/{schedule.pk}/", {"agent": "a2"}, format="json", HTTP_IF_MATCH='W/"1"')
    assert stale.status_code == 409
    assert Schedule.objects.get(pk=schedule.pk).agent == "a1"


@pytest.mark.parametrize(
    ("body", "headers", "field", "message"),
    [
        ({"agent": "x"}, {}, "version", "is required"),
        ({"agent": "x", "version": "one"}, {}, "version", "whole number"),
        ({"agent": "x", "version": 1}, {"HTTP_IF_MATCH": '"2"'}, "version", "differs from the If-Match"),
        ({"agent": "x"}, {"HTTP_IF_MATCH": "yesterday"}, "If-Match", "ETag"),
    ],
)
def test_an_update_must_say_which_version_it_read(
    org: Organization, editor: APIClient, body: dict[str, Any], headers: dict[str, Any], field: str, message: str
) -> None:
    schedule = make_schedule(org)
    response = editor.patch(f"{API}/schedules/{schedule.pk}/", body, format="json", **headers)
    assert response.status_code == 400
    assert message in error_fields(response)[field][0]
    assert Schedule.objects.get(pk=schedule.pk).agent == ""


def test_put_replaces_the_definition_and_resets_what_it_leaves_out(org: Organization, editor: APIClient) -> None:
    schedule = make_schedule(org, description="old words", agent="eu-1", priority=8)
    response = editor.put(
        f"{API}/schedules/{schedule.pk}/", {**schedule_data("nightly", cron="0 4 * * *"), "version": 1}, format="json"
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["cron"], body["description"], body["agent"], body["priority"]) == ("0 4 * * *", "", "", 5)


def test_delete_removes_the_schedule_and_keeps_its_runs(org: Organization) -> None:
    admin = client_for(org, "admin")
    schedule = make_schedule(org)
    admin.post(f"{API}/schedules/{schedule.pk}/run-now/")
    assert admin.delete(f"{API}/schedules/{schedule.pk}/").status_code == 204
    assert not Schedule.objects.filter(pk=schedule.pk).exists()
    assert Run.objects.filter(schedule__isnull=True).count() == 1
    assert AuditEntry.objects.filter(action="schedule.delete", target_id=str(schedule.pk)).exists()


# --- enable, disable --------------------------------------------------------------------------------------------------
def test_disable_with_a_note_then_enable(org: Organization, editor: APIClient) -> None:
    schedule = make_schedule(org)
    paused = editor.post(f"{API}/schedules/{schedule.pk}/disable/", {"note": "db maintenance"}, format="json")
    assert paused.status_code == 200
    assert (paused.json()["state"], paused.json()["state_note"]) == ("paused", "db maintenance")
    again = editor.post(f"{API}/schedules/{schedule.pk}/disable/", {}, format="json")
    assert again.status_code == 200 and again.json()["state_note"] == "db maintenance"
    resumed = editor.post(f"{API}/schedules/{schedule.pk}/enable/")
    assert resumed.status_code == 200 and resumed.json()["state"] == "active"
    actions = list(AuditEntry.objects.order_by("id").values_list("action", flat=True))
    assert actions[-2:] == ["schedule.disable", "schedule.enable"]


def test_a_cancelled_schedule_cannot_be_enabled_or_disabled(org: Organization, editor: APIClient) -> None:
    schedule = make_schedule(org)
    schedule_cancel(schedule=schedule, note="retired")
    for verb in ("enable", "disable"):
        response = editor.post(f"{API}/schedules/{schedule.pk}/{verb}/")
        assert response.status_code == 409
        assert "cancelled" in response.json()["detail"]
    assert Schedule.objects.get(pk=schedule.pk).state == ScheduleState.CANCELLED


def test_disable_note_is_bounded(org: Organization, editor: APIClient) -> None:
    schedule = make_schedule(org)
    response = editor.post(f"{API}/schedules/{schedule.pk}/disable/", {"note": "x" * 501}, format="json")
    assert response.status_code == 400
    assert "500" in error_fields(response)["note"][0]
    assert Schedule.objects.get(pk=schedule.pk).state == ScheduleState.ACTIVE


# --- run-now, backfill, runs ------------------------------------------------------------------------------------------
def test_run_now_with_the_same_idempotency_key_returns_the_same_run(org: Organization) -> None:
    operator = client_for(org, "operator")
    schedule = make_schedule(org)
    first = operator.post(f"{API}/schedules/{schedule.pk}/run-now/", HTTP_IDEMPOTENCY_KEY="deploy-77")
    second = operator.post(f"{API}/schedules/{schedule.pk}/run-now/", HTTP_IDEMPOTENCY_KEY="deploy-77")
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    assert first.json()["trigger"] == RunTrigger.MANUAL
    assert Run.objects.count() == 1
    assert AuditEntry.objects.filter(action="schedule.run_now").count() == 1
    other = make_schedule(org, "other")
    clash = operator.post(f"{API}/schedules/{other.pk}/run-now/", HTTP_IDEMPOTENCY_KEY="deploy-77")
    assert clash.status_code == 409 and "another schedule" in clash.json()["detail"]
    without = operator.post(f"{API}/schedules/{schedule.pk}/run-now/")
    assert without.status_code == 201 and Run.objects.count() == 2


def test_run_now_refuses_an_unusable_idempotency_key(org: Organization) -> None:
    schedule = make_schedule(org)
    response = client_for(org, "operator").post(
        f"{API}/schedules/{schedule.pk}/run-now/", HTTP_IDEMPOTENCY_KEY="x" * 151
    )
    assert response.status_code == 400 and "Idempotency-Key" in error_fields(response)
    assert Run.objects.count() == 0


def test_backfill_creates_runs_for_past_slots_once(org: Organization) -> None:
    operator = client_for(org, "operator")
    schedule = make_schedule(org, cron="0 * * * *")
    end = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    body = {"from": (end - timedelta(hours=3)).isoformat(), "to": end.isoformat()}
    dry = operator.post(f"{API}/schedules/{schedule.pk}/backfill/", {**body, "dry_run": True}, format="json")
    assert dry.status_code == 200 and (dry.json()["slots"], dry.json()["created"]) == (3, 0)
    assert Run.objects.count() == 0
    first = operator.post(f"{API}/schedules/{schedule.pk}/backfill/", body, format="json")
    assert first.status_code == 200, first.content
    assert (first.json()["created"], first.json()["existing"]) == (3, 0)
    second = operator.post(f"{API}/schedules/{schedule.pk}/backfill/", body, format="json")
    assert (second.json()["created"], second.json()["existing"]) == (0, 3)
    assert Run.objects.filter(trigger=RunTrigger.BACKFILL).count() == 3
    assert AuditEntry.objects.filter(action="schedule.backfill").count() == 2


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"from": "2026-01-02T00:00:00+00:00", "to": "2026-01-01T00:00:00+00:00"}, "to", "must be after from"),
        ({"from": "2026-01-01T00:00:00", "to": "2026-01-02T00:00:00+00:00"}, "from", "needs a UTC offset"),
        ({"from": "yesterday", "to": "2026-01-02T00:00:00+00:00"}, "from", "is not an ISO-8601 date-time"),
        ({"from": "2026-01-01T00:00:00+00:00", "to": "2999-01-01T00:00:00+00:00"}, "to", "is in the future"),
        ({"to": "2026-01-02T00:00:00+00:00"}, "from", "required"),
    ],
)
def test_backfill_names_the_bad_end_of_the_range(
    org: Organization, body: dict[str, Any], field: str, message: str
) -> None:
    schedule = make_schedule(org, cron="0 * * * *")
    operator = client_for(org, "operator")
    before = row_counts()
    response = operator.post(f"{API}/schedules/{schedule.pk}/backfill/", body, format="json")
    assert response.status_code == 400
    assert message in error_fields(response)[field][0]
    assert row_counts() == before


def test_runs_of_a_schedule_newest_first(org: Organization) -> None:
    operator = client_for(org, "operator")
    schedule = make_schedule(org)
    ids = [operator.post(f"{API}/schedules/{schedule.pk}/run-now/").json()["id"] for _ in range(3)]
    make_schedule(org, "unrelated")
    response = operator.get(f"{API}/schedules/{schedule.pk}/runs/")
    assert [row["id"] for row in response.json()["results"]] == ids[::-1]
    assert operator.get(f"{API}/schedules/{schedule.pk}/runs/?status=failed").json()["results"] == []


# --- preview ----------------------------------------------------------------------------------------------------------
def test_preview_lists_the_same_instants_as_the_preview_command(org: Organization) -> None:
    viewer = client_for(org, "viewer")
    after = "2026-03-28T00:00:00+00:00"
    response = viewer.post(
        f"{API}/schedules/preview/",
        {"trigger_kind": "cron", "cron": "30 2 * * *", "timezone": "Europe/Riga", "after": after, "count": 4},
        format="json",
    )
    assert response.status_code == 200, response.content
    out = StringIO()
    call_command(
        "preview", "--cron", "30 2 * * *", "--tz", "Europe/Riga", "--after", after, "--count", "4", "--json", stdout=out
    )
    assert response.json()["slots"] == json.loads(out.getvalue())
    assert response.json()["slots"][2] == "2026-03-30T02:30:00+03:00"
    assert Schedule.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"trigger_kind": "cron", "cron": "61 * * * *"}, "cron", "minute"),
        ({"trigger_kind": "interval", "interval_seconds": 1}, "interval_seconds", "below the minimum"),
        ({"trigger_kind": "cron", "cron": "0 * * * *", "timezone": "Europe/Berln"}, "timezone", "Europe/Berlin"),
        ({"trigger_kind": "once"}, "run_at", "is required for a once trigger"),
        ({"trigger_kind": "cron", "cron": "0 * * * *", "count": 1001}, "count", "1000"),
        ({"trigger_kind": "cron", "cron": "0 * * * *", "after": "2026-01-01T00:00:00"}, "after", "UTC offset"),
        ({"trigger_kind": "weekly"}, "trigger_kind", "is not one of once, interval, cron"),
    ],
)
def test_preview_names_what_is_wrong(org: Organization, body: dict[str, Any], field: str, message: str) -> None:
    response = client_for(org, "viewer").post(f"{API}/schedules/preview/", body, format="json")
    assert response.status_code == 400
    assert message in error_fields(response)[field][0]
