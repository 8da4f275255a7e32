"""The main path with real parts: PostgreSQL, Redis as broker and event stream, and a real Celery worker."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import redis
import time_machine
from django.conf import settings

from echoflow.accounts.models import Organization
from echoflow.events.bus import outbox_relay
from runs.dispatcher import dispatch_tick
from runs.models import AttemptOutcome, Run, RunAttempt, RunStatus, RunTrigger
from runs.services import run_retry
from schedules.models import Schedule
from schedules.services import schedule_create
from tests.conftest import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]

SHANGHAI = ZoneInfo("Asia/Shanghai")


def _run_status(run_id: int) -> str:
    return Run.objects.values_list("status", flat=True).get(pk=run_id)


def _stream_events(client: redis.Redis, run_id: int) -> list[str]:
    entries = client.xrange(settings.EVENTS_STREAM)
    types = []
    for _, fields in entries:
        envelope = json.loads(fields[b"envelope"])
        if envelope["run"] == run_id:
            types.append(envelope["type"])
    return types


def test_cron_schedule_fires_in_its_zone_and_succeeds_with_one_attempt(
    org: Organization, celery_worker_thread: object, redis_client: redis.Redis
) -> None:
    with time_machine.travel(datetime(2026, 11, 23, 8, 59, 50, tzinfo=SHANGHAI), tick=True) as traveller:
        schedule = schedule_create(
            organization=org,
            data={
                "name": "weekday report",
                "trigger_kind": "cron",
                "cron": "0 9 * * 1-5",
                "timezone": "Asia/Shanghai",
                "action_name": "echoflow.echo",
                "payload": {"report": "daily"},
            },
        )
        assert schedule.next_run_at == datetime(2026, 11, 23, 1, 0, tzinfo=UTC)
        assert dispatch_tick().created == 0  # not due yet

        traveller.move_to(datetime(2026, 11, 23, 9, 0, 0, 300_000, tzinfo=SHANGHAI))
        tick = dispatch_tick()
        assert (tick.created, tick.enqueued) == (1, 1)
        run = Run.objects.get(schedule=schedule)
        wait_until(lambda: _run_status(run.pk) == RunStatus.SUCCEEDED, what="the run to succeed")

    run.refresh_from_db()
    assert run.slot == datetime(2026, 11, 23, 9, 0, tzinfo=SHANGHAI)
    assert run.trigger == RunTrigger.SCHEDULE
    assert run.attempts == 1
    assert run.output == {"report": "daily"}
    attempts = list(RunAttempt.objects.filter(run=run))
    assert [(a.number, a.outcome) for a in attempts] == [(1, AttemptOutcome.SUCCEEDED)]
    schedule.refresh_from_db()
    assert schedule.next_run_at == datetime(2026, 11, 24, 1, 0, tzinfo=UTC)
    assert schedule.last_run_status == RunStatus.SUCCEEDED

    outbox_relay()
    assert _stream_events(redis_client, run.pk) == ["run.queued", "run.started", "run.succeeded"]


def test_failing_schedule_retries_at_backoff_offsets_then_fails_and_manual_retry_reopens(
    org: Organization, celery_worker_thread: object
) -> None:
    start = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    with time_machine.travel(start, tick=True) as traveller:
        schedule = schedule_create(
            organization=org,
            data={
                "name": "flaky export",
                "trigger_kind": "once",
                "run_at": (start + timedelta(seconds=5)).isoformat(),
                "action_name": "echoflow.fail",
                "payload": {"message": "upstream said no"},
                "max_attempts": 3,
                "backoff_seconds": [30, 60, 300],
            },
        )
        traveller.move_to(start + timedelta(seconds=5, milliseconds=100))
        assert dispatch_tick().enqueued == 1
        run = Run.objects.get(schedule=schedule)
        wait_until(lambda: _run_status(run.pk) == RunStatus.RETRYING, what="attempt 1 to fail")
        run.refresh_from_db()
        first_finish = RunAttempt.objects.get(run=run, number=1).finished_at
        assert first_finish is not None and run.next_attempt_at is not None
        assert abs((run.next_attempt_at - first_finish).total_seconds() - 30) < 1
        assert "upstream said no" in run.error

        # Before the backoff has elapsed the dispatcher leaves it alone: the wait lives in the database.
        traveller.move_to(run.next_attempt_at - timedelta(seconds=1))
        assert dispatch_tick().retried == 0
        assert _run_status(run.pk) == RunStatus.RETRYING

        traveller.move_to(run.next_attempt_at + timedelta(milliseconds=100))
        tick = dispatch_tick()
        assert (tick.retried, tick.enqueued) == (1, 1)
        wait_until(
            lambda: Run.objects.filter(pk=run.pk, status=RunStatus.RETRYING, attempts=2).exists(),
            what="attempt 2 to fail",
        )
        run.refresh_from_db()
        second_finish = RunAttempt.objects.get(run=run, number=2).finished_at
        assert second_finish is not None and run.next_attempt_at is not None
        assert abs((run.next_attempt_at - second_finish).total_seconds() - 60) < 1

        traveller.move_to(run.next_attempt_at + timedelta(milliseconds=100))
        assert dispatch_tick().enqueued == 1
        wait_until(lambda: _run_status(run.pk) == RunStatus.FAILED, what="the run to fail for good")

        run.refresh_from_db()
        assert run.attempts == 3
        outcomes = list(RunAttempt.objects.filter(run=run).order_by("number").values_list("number", "outcome"))
        assert outcomes == [(1, "failed"), (2, "failed"), (3, "failed")]
        schedule.refresh_from_db()
        assert schedule.last_run_status == RunStatus.FAILED
        assert schedule.consecutive_failures == 1

        # A person retries it: it is queued again, sent by the next tick, and gets a fresh attempt budget.
        run_retry(run=run)
        assert _run_status(run.pk) == RunStatus.QUEUED
        assert dispatch_tick().enqueued == 1
        wait_until(
            lambda: Run.objects.filter(pk=run.pk, status=RunStatus.RETRYING, attempts=4).exists(),
            what="the manual retry's attempt",
        )
        assert RunAttempt.objects.filter(run=run).count() == 4


def test_redelivered_message_for_a_finished_run_does_nothing(org: Organization, celery_worker_thread: object) -> None:
    from runs.tasks import execute_run

    schedule = schedule_create(
        organization=org,
        data={"name": "once", "trigger_kind": "once", "delay_seconds": 0, "action_name": "echoflow.noop"},
    )
    dispatch_tick()
    run = Run.objects.get(schedule=schedule)
    wait_until(lambda: _run_status(run.pk) == RunStatus.SUCCEEDED, what="the run to succeed")
    execute_run.delay(run.pk)  # a duplicate delivery
    execute_run.delay(run.pk)
    wait_until(lambda: not Schedule.objects.filter(pk=schedule.pk, state="active").exists(), what="completion")
    dispatch_tick()
    assert RunAttempt.objects.filter(run=run).count() == 1
    run.refresh_from_db()
    assert run.attempts == 1 and run.status == RunStatus.SUCCEEDED
