"""The dispatcher's batch writes (runs/run_writes.py): PostgreSQL's set-based statements, and the ORM path for
SQLite, write the same runs, events and schedule state."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction
from django.forms.models import model_to_dict
from django.test.utils import CaptureQueriesContext
from pytest_django.fixtures import Settings

from echoflow.accounts.models import Organization
from echoflow.events.models import OutboxEvent
from runs import run_writes
from runs.dispatcher import dispatch_tick
from runs.models import Run, RunStatus, RunTrigger
from runs.run_writes import PlannedRun, planned_runs_insert, scheduled_run_key, schedules_save_plan
from schedules.models import Schedule, ScheduleState
from schedules.planning import DueSchedule
from schedules.services import schedule_create
from tests.conftest import embedded_child

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _create(org: Organization, name: str, **data: Any) -> Schedule:
    values: dict[str, Any] = {"name": name, "trigger_kind": "cron", "cron": "* * * * *", "action_name": "echoflow.noop"}
    values.update(data)
    return schedule_create(organization=org, data=values, now=T0 - timedelta(seconds=30))


def _planned(
    schedule: Schedule,
    slot: datetime,
    *,
    due_at: datetime | None = None,
    trigger: str = "schedule",
    round_index: int = 1,
) -> PlannedRun:
    return PlannedRun(
        schedule=DueSchedule.of(schedule), slot=slot, due_at=due_at or slot, trigger=trigger, round_index=round_index
    )


def _mixed_schedules(org: Organization, count: int) -> list[Schedule]:
    kinds: list[dict[str, Any]] = [
        {"cron": "* * * * *"},
        {"cron": "0 * * * *"},
        {"cron": "*/5 * * * *", "timezone": "America/New_York"},
        {"trigger_kind": "interval", "interval_seconds": 90},
        {"trigger_kind": "once", "cron": "", "run_at": T0.isoformat()},
        {"cron": "* * * * *", "max_runs": 1},
    ]
    return [_create(org, f"s{i}", **kinds[i % len(kinds)]) for i in range(count)]


@pytest.mark.parametrize("batch_size", [1000, 7])
def test_one_tick_advances_every_schedule_to_its_own_next_slot(
    org: Organization, settings: Settings, batch_size: int
) -> None:
    settings.ECHOFLOW = {**settings.ECHOFLOW, "DISPATCH_BATCH_SIZE": batch_size}
    schedules = _mixed_schedules(org, 120)
    Schedule.objects.update(next_run_at=T0, missed_count=3)  # all due at the same instant
    before = {s.pk: model_to_dict(s) for s in Schedule.objects.all()}
    now = T0 + timedelta(seconds=1)

    result = dispatch_tick(now=now, sender=lambda rows: None)

    assert (result.schedules, result.created) == (120, 120)
    for schedule in schedules:
        schedule.refresh_from_db()
        expected_next = schedule.trigger.next_after(T0)
        if schedule.trigger_kind == "once" or schedule.max_runs == 1:
            expected_next = None
        assert schedule.next_run_at == expected_next, schedule.name
        assert schedule.runs_count == 1
        assert schedule.missed_count == 3
        if expected_next is None:
            assert (schedule.state, schedule.state_note) == (ScheduleState.COMPLETED, "no future slot")
        else:
            assert (schedule.state, schedule.state_note) == (ScheduleState.ACTIVE, "")
        # Nothing else of the row changed.
        after = model_to_dict(schedule)
        untouched = {k for k in after if k not in run_writes.PLAN_FIELDS}
        assert {k: after[k] for k in untouched} == {k: before[schedule.pk][k] for k in untouched}
    assert sorted(Run.objects.values_list("schedule_id", flat=True)) == sorted(s.pk for s in schedules)


def test_a_due_schedule_has_the_trigger_of_its_row(org: Organization) -> None:
    for schedule in _mixed_schedules(org, 6):
        (row,) = Schedule.objects.filter(pk=schedule.pk).values_list(*DueSchedule.COLUMNS)
        assert DueSchedule(*row) == DueSchedule.of(schedule)
        assert DueSchedule(*row).trigger == schedule.trigger


def test_claimed_rows_read_in_binary_equal_the_orm_rows(org: Organization) -> None:
    schedules = _mixed_schedules(org, 12)
    Schedule.objects.filter(pk=schedules[0].pk).update(
        start_at=T0 - timedelta(days=1, microseconds=7), end_at=T0 + timedelta(days=400), state_note="é ' \\ \""
    )
    with transaction.atomic():
        query = Schedule.objects.select_for_update(skip_locked=True).order_by("id").values_list(*DueSchedule.COLUMNS)
        fast = run_writes.rows_fetch(query)
        assert fast == list(query)
    for row in fast:
        for value in row:
            if isinstance(value, datetime):
                assert value.utcoffset() == timedelta(0)
    assert [DueSchedule(*row) for row in fast] == [DueSchedule.of(s) for s in Schedule.objects.order_by("id")]


def test_schedules_save_plan_writes_values_that_differ_row_by_row(org: Organization) -> None:
    schedules = [DueSchedule.of(s) for s in _mixed_schedules(org, 30)]
    for i, schedule in enumerate(schedules):
        schedule.next_run_at = None if i % 4 == 0 else T0 + timedelta(minutes=i, microseconds=i)
        schedule.state = ScheduleState.PAUSED if i % 3 == 0 else ScheduleState.ACTIVE
        schedule.state_note = f"note {i} — ünïcode, 'quotes'" if i % 3 == 0 else ""
        schedule.runs_count = i * 7
        schedule.missed_count = i
    schedules_save_plan(schedules)
    got = {s.pk: (s.next_run_at, s.state, s.state_note, s.runs_count, s.missed_count) for s in Schedule.objects.all()}
    assert got == {s.pk: (s.next_run_at, s.state, s.state_note, s.runs_count, s.missed_count) for s in schedules}
    assert set(Schedule.objects.values_list("name", flat=True)) == {f"s{i}" for i in range(30)}  # others untouched


def _comparable(run: Run) -> dict[str, Any]:
    row = model_to_dict(run)
    for name in ("id", "idempotency_key", "slot", "due_at", "trace_id", "round_index"):
        row.pop(name)
    return row


def test_the_postgresql_insert_writes_the_run_and_event_the_orm_path_writes(org: Organization) -> None:
    schedule = _create(
        org,
        "full",
        agent="eu-1",
        action_name="echoflow.echo",
        payload={"a": [1, 2], "b": "x"},
        priority=8,
        max_attempts=4,
        backoff_seconds=[1, 2],
        timeout_seconds=42,
    )
    now = T0 + timedelta(seconds=1)
    resend_at = now + timedelta(seconds=300)
    first = _planned(schedule, T0, trigger=RunTrigger.SCHEDULE)
    second = _planned(schedule, T0 + timedelta(minutes=1), due_at=now, trigger=RunTrigger.CATCHUP, round_index=2)
    (fast,) = run_writes._insert_postgresql([first], now=now, resend_at=resend_at)
    (portable,) = run_writes._insert_orm([second], now=now, resend_at=resend_at)

    fast_run, portable_run = Run.objects.get(pk=fast.id), Run.objects.get(pk=portable.id)
    assert _comparable(fast_run) == {**_comparable(portable_run), "trigger": RunTrigger.SCHEDULE}
    assert (fast_run.created_at, fast_run.enqueued_at, fast_run.sends, fast_run.resend_at) == (now, now, 1, resend_at)
    assert fast_run.idempotency_key == scheduled_run_key(schedule.pk, T0)
    assert fast_run.agent == portable_run.agent == "eu-1"
    assert (fast_run.slot, fast_run.due_at, fast_run.round_index) == (T0, T0, 1)
    assert len(fast_run.trace_id) == 32 and int(fast_run.trace_id, 16) >= 0
    assert fast_run.trace_id != portable_run.trace_id
    assert (fast.schedule_id, fast.priority, fast.marked_sent) == (schedule.pk, 8, True)

    fast_event = OutboxEvent.objects.get(run_id=fast.id)
    portable_event = OutboxEvent.objects.get(run_id=portable.id)
    assert fast_event.envelope()["data"] == {"status": "queued", "slot": T0.isoformat()}
    assert portable_event.envelope()["data"] == {"status": "queued", "slot": second.slot.isoformat()}
    for event in (fast_event, portable_event):
        assert (event.type, event.organization_id, event.schedule_id, event.attempt) == (
            "run.queued",
            org.pk,
            schedule.pk,
            0,
        )
        assert (event.relayed_at, event.stream_id) == (None, "")
    assert fast_event.event_id != portable_event.event_id


def test_the_event_names_the_slot_as_isoformat_does(org: Organization) -> None:
    schedule = _create(org, "fractions")
    slots = [
        T0,
        T0 + timedelta(microseconds=500_000),
        T0 + timedelta(microseconds=1),
        T0 + timedelta(seconds=59, microseconds=999_999),
        datetime(2030, 3, 31, 1, 0, 7, 120_000, tzinfo=UTC),
    ]
    now = T0 + timedelta(days=2000)
    planned = [_planned(schedule, s) for s in slots]
    with CaptureQueriesContext(connection) as queries:  # Django's query log sees the batch statement too
        inserted = planned_runs_insert(planned, now=now, resend_at=now)
    assert len(inserted) == len(slots)
    assert [q for q in queries.captured_queries if "INSERT INTO" in q["sql"] and "unnest" in q["sql"]]
    data = {e.data["slot"] for e in OutboxEvent.objects.filter(type="run.queued")}
    assert data == {s.isoformat() for s in slots}
    keys = set(Run.objects.values_list("idempotency_key", flat=True))
    assert keys == {scheduled_run_key(schedule.pk, s) for s in slots}


def test_a_slot_written_before_gets_no_second_run_and_no_second_event(org: Organization) -> None:
    schedules = [_create(org, f"s{i}") for i in range(5)]
    now = T0 + timedelta(seconds=1)
    planned = [_planned(s, T0) for s in schedules]
    assert len(planned_runs_insert(planned[:2], now=now, resend_at=now)) == 2
    # A second dispatcher that planned from an old snapshot writes all five: only the three new ones go in.
    again = planned_runs_insert(planned, now=now, resend_at=now)
    assert sorted(r.schedule_id for r in again) == sorted(s.pk for s in schedules[2:])
    assert Run.objects.count() == OutboxEvent.objects.filter(type="run.queued").count() == 5
    event_runs = OutboxEvent.objects.filter(type="run.queued").values_list("run_id", flat=True)
    assert set(event_runs) == set(Run.objects.values_list("pk", flat=True))


def test_only_runs_already_due_are_written_as_sent(org: Organization) -> None:
    schedule = _create(org, "jittered")
    now = T0 + timedelta(seconds=1)
    due = _planned(schedule, T0, due_at=now)
    later = _planned(schedule, T0 + timedelta(minutes=1), due_at=now + timedelta(seconds=20), round_index=2)
    written = {r.id: r.marked_sent for r in planned_runs_insert([due, later], now=now, resend_at=now)}
    assert sorted(written.values()) == [False, True]
    rows = {pk: Run.objects.values_list("enqueued_at", "sends", "resend_at").get(pk=pk) for pk in written}
    assert sorted(rows.values(), key=lambda r: r[1]) == [(None, 0, None), (now, 1, now)]
    assert set(Run.objects.values_list("status", flat=True)) == {RunStatus.QUEUED}


_SQLITE_CHILD = textwrap.dedent(
    """
    import json
    from datetime import UTC, datetime, timedelta

    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from django.db import connection, transaction

    from echoflow.accounts.services import organization_get_or_create
    from echoflow.events.models import OutboxEvent
    from runs.dispatcher import dispatch_tick
    from runs.models import Run
    from schedules.models import Schedule
    from schedules.services import schedule_create

    t0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    org = organization_get_or_create(name="Acme", slug="acme")
    for i in range(5):
        data = {"name": f"s{i}", "trigger_kind": "cron", "cron": "* * * * *", "action_name": "echoflow.noop",
                "payload": {"i": i}, "jitter_seconds": 50 if i == 4 else 0}
        schedule_create(organization=org, data=data, now=t0 - timedelta(seconds=30))
    sent = []
    first = dispatch_tick(now=t0 + timedelta(seconds=1), sender=sent.extend)
    # A stale dispatcher would plan slot t0 again: the database refuses the duplicate.
    Schedule.objects.filter(name="s0").update(next_run_at=t0)
    again = dispatch_tick(now=t0 + timedelta(seconds=2), sender=sent.extend)
    print(json.dumps({
        "vendor": connection.vendor,
        "created": [first.created, again.created],
        "sent": len(sent),
        "runs": Run.objects.count(),
        "events": OutboxEvent.objects.filter(type="run.queued").count(),
        "next_run_at": sorted({s.next_run_at.isoformat() for s in Schedule.objects.all()}),
        "runs_count": sorted(Schedule.objects.values_list("runs_count", flat=True)),
        "payloads": sorted(r.payload["i"] for r in Run.objects.all()),
        "unsent": Run.objects.filter(enqueued_at__isnull=True).count(),
    }))
    """
)


@pytest.mark.django_db(False)
def test_the_orm_path_on_sqlite_writes_runs_events_and_next_slots(tmp_path: Path) -> None:
    got = embedded_child(_SQLITE_CHILD, tmp_path)
    assert got == {
        "vendor": "sqlite",
        "created": [5, 0],
        "sent": 4,  # the jittered run waits for its due time
        "runs": 5,
        "events": 5,
        "next_run_at": [(T0 + timedelta(minutes=1)).isoformat()],
        "runs_count": [1, 1, 1, 1, 1],
        "payloads": [0, 1, 2, 3, 4],
        "unsent": 1,
    }
