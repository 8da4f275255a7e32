"""The API's read serializers (echoflow/api/serializers/fast.py) write what DRF's own to_representation writes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from django.utils import timezone
from rest_framework import serializers

from echoflow.accounts.models import Organization
from echoflow.api.serializers.runs import RunAttemptSerializer, RunDetailSerializer, RunSerializer
from echoflow.api.serializers.schedules import ScheduleSerializer
from runs.executor import run_execute
from runs.models import Run, RunAttempt, RunStatus
from runs.selectors import run_list
from runs.services import run_create_adhoc, schedule_run_now
from schedules.models import Schedule
from schedules.services import schedule_create

pytestmark = [pytest.mark.django_db]


def _both(serializer: serializers.Serializer[Any], instance: Any) -> tuple[Any, Any]:
    """The fast output, and DRF's (Serializer.to_representation, which FastRepresentation overrides)."""
    return serializer.to_representation(instance), dict(serializers.Serializer.to_representation(serializer, instance))


def _schedules(org: Organization) -> list[Schedule]:
    kinds: list[dict[str, Any]] = [
        {"trigger_kind": "cron", "cron": "0 8 * * 1-5", "timezone": "Asia/Shanghai", "labels": {"team": "ops"}},
        {"trigger_kind": "interval", "interval_seconds": 90, "payload": [1, {"a": None}], "description": "é"},
        {"trigger_kind": "once", "run_at": "2031-05-06T07:08:09.123456+02:00"},
        {"trigger_kind": "cron", "cron": "*/30 * * * * *", "end_at": "2032-01-01T00:00:00Z", "agent": "a-1"},
    ]
    made = [
        schedule_create(organization=org, data={"name": f"s{i}", "action_name": "echoflow.echo", **kind})
        for i, kind in enumerate(kinds)
    ]
    Schedule.objects.filter(pk=made[0].pk).update(
        last_run_at=datetime(2026, 11, 23, 9, 0, 0, 1, tzinfo=UTC), last_run_status="failed", consecutive_failures=2
    )
    return list(Schedule.objects.order_by("id"))


def _runs(org: Organization, schedules: list[Schedule]) -> list[Run]:
    done, _ = schedule_run_now(schedule=schedules[0])
    run_execute(run_id=done.pk, worker="w@h")
    queued, _ = schedule_run_now(schedule=schedules[2])
    adhoc, _ = run_create_adhoc(organization=org, action_kind="python", action_name="echoflow.echo", payload="x")
    Run.objects.filter(pk=queued.pk).update(slot=datetime(2026, 3, 29, 1, 30, tzinfo=UTC), round_index=3)
    Run.objects.filter(pk=adhoc.pk).update(status=RunStatus.FAILED, error="boom\nline 2", output={"n": [1, 2]})
    return list(Run.objects.order_by("id"))


@pytest.mark.parametrize("zone", ["UTC", "Asia/Shanghai", "America/New_York"])
def test_schedules_and_runs_serialize_as_drf_would(org: Organization, zone: str) -> None:
    schedules = _schedules(org)
    runs = _runs(org, schedules)
    with timezone.override(zone):
        for schedule in schedules:
            fast, drf = _both(ScheduleSerializer(), schedule)
            assert fast == drf
            assert list(fast) == list(drf)  # the same order of keys
        annotated = list(run_list(organization_id=org.pk))
        assert len(annotated) == len(runs)
        for run in [*runs, *annotated]:
            for serializer in (RunSerializer(), RunDetailSerializer()):
                fast, drf = _both(serializer, run)
                assert fast == drf
                assert list(fast) == list(drf)
        for attempt in RunAttempt.objects.all():
            assert _both(RunAttemptSerializer(), attempt)[0] == _both(RunAttemptSerializer(), attempt)[1]


def test_a_page_serializes_every_row_with_one_plan(org: Organization) -> None:
    schedules = _schedules(org)
    many = ScheduleSerializer(schedules, many=True)
    data = many.data
    assert [row["name"] for row in data] == [s.name for s in schedules]
    assert data[2]["run_at"] == "2031-05-06T05:08:09.123456Z"  # UTC, written with Z
    assert data[0]["trigger_description"] == ScheduleSerializer().get_trigger_description(schedules[0])
    assert data[0]["last_run_at"] == "2026-11-23T09:00:00.000001Z"
    assert data[0]["next_run_at"] is not None and data[2]["last_run_at"] is None


def test_a_foreign_key_is_its_id_without_a_query(org: Organization, django_assert_num_queries: Any) -> None:
    schedules = _schedules(org)
    run, _ = schedule_run_now(schedule=schedules[0])
    run = Run.objects.get(pk=run.pk)
    with django_assert_num_queries(1):  # the schedule's name (not annotated here); never the schedule for its id
        assert RunSerializer().to_representation(run)["schedule"] == schedules[0].pk
    run.schedule_id = None
    assert RunSerializer().to_representation(run)["schedule"] is None
    assert RunSerializer().to_representation(run)["created_at"].endswith("Z")
