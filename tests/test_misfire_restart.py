"""Restarts, pauses and edits through the real dispatcher: exactly the runs each misfire policy promises.

Schedules are made with ``schedule_create`` and dispatched with ``dispatch_tick(now=…, sender=list.extend)`` under
time-machine: no worker, no broker. A per-minute cron in UTC runs at 10:00, 10:01, 10:02; dispatch then stops
for ten minutes (or the schedule is paused) and comes back. Slots at most 5 s old at a tick are on time.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine
from pytest_django.fixtures import Settings

import runs.dispatcher
from echoflow.accounts.models import Organization
from echoflow.events.models import OutboxEvent
from runs.dispatcher import TickResult, dispatch_tick
from runs.models import Run, RunStatus, RunTrigger
from runs.run_writes import NewRun, PlannedRun
from schedules.models import Schedule, ScheduleState
from schedules.selectors import schedule_preview
from schedules.services import schedule_create, schedule_pause, schedule_resume, schedule_update
from schedules.triggers import jitter_offset

T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)


def at(minutes: int, seconds: float = 0) -> datetime:
    return T0 + timedelta(minutes=minutes, seconds=seconds)


def create(org: Organization, *, now: datetime | None = None, **data: Any) -> Schedule:
    values: dict[str, Any] = {
        "name": "every-minute",
        "trigger_kind": "cron",
        "cron": "* * * * *",
        "timezone": "UTC",
        "action_name": "echoflow.echo",
        "overlap_policy": "allow_all",
        "max_concurrency": 1000,
    }
    values.update(data)
    now = now or at(0, -30)
    with time_machine.travel(now, tick=False):
        return schedule_create(organization=org, data=values, now=now)


class Dispatcher:
    """The dispatcher process, tick by tick; ``sent`` is what it handed to the broker."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, int]] = []

    def tick(self, now: datetime, **kwargs: Any) -> TickResult:
        with time_machine.travel(now, tick=False):
            return dispatch_tick(now=now, sender=self.sent.extend, **kwargs)

    def run_minutes(self, first: int, last: int, second: float = 1) -> None:
        for minute in range(first, last + 1):
            self.tick(at(minute, second))


def slots(schedule: Schedule) -> list[datetime]:
    return sorted(s for s in Run.objects.filter(schedule=schedule).values_list("slot", flat=True) if s is not None)


def triggers(schedule: Schedule) -> dict[datetime, str]:
    return {r.slot: r.trigger for r in Run.objects.filter(schedule=schedule) if r.slot is not None}


@pytest.fixture
def dispatcher() -> Iterator[Dispatcher]:
    yield Dispatcher()


# -- ten minutes without dispatch -----------------------------------------------------------------------------------


def test_restart_after_ten_minutes_with_coalesce_runs_once_for_the_latest_slot(
    org: Organization, dispatcher: Dispatcher
) -> None:
    schedule = create(org, misfire_policy="coalesce")
    dispatcher.run_minutes(0, 2)
    assert slots(schedule) == [at(0), at(1), at(2)]
    result = dispatcher.tick(at(12, 30))  # 10:03 … 10:12 were missed
    assert result.created == 1
    assert slots(schedule)[3:] == [at(12)]
    assert triggers(schedule)[at(12)] == RunTrigger.CATCHUP
    schedule.refresh_from_db()
    assert schedule.missed_count == 9
    assert schedule.next_run_at == at(13)
    dispatcher.tick(at(13, 1))
    assert slots(schedule)[3:] == [at(12), at(13)]


def test_restart_after_ten_minutes_with_all_runs_every_missed_slot(org: Organization, dispatcher: Dispatcher) -> None:
    schedule = create(org, misfire_policy="all")
    dispatcher.run_minutes(0, 2)
    result = dispatcher.tick(at(12, 30))
    assert result.created == 10
    assert slots(schedule) == [at(m) for m in range(13)]
    assert {triggers(schedule)[at(m)] for m in range(3, 13)} == {RunTrigger.CATCHUP}
    schedule.refresh_from_db()
    assert schedule.missed_count == 0
    assert schedule.next_run_at == at(13)


def test_restart_after_ten_minutes_with_skip_runs_nothing_until_the_next_slot(
    org: Organization, dispatcher: Dispatcher
) -> None:
    schedule = create(org, misfire_policy="skip")
    dispatcher.run_minutes(0, 2)
    result = dispatcher.tick(at(12, 30))
    assert result.created == 0
    schedule.refresh_from_db()
    assert schedule.missed_count == 10
    assert schedule.next_run_at == at(13)
    dispatcher.tick(at(13, 1))
    assert slots(schedule) == [at(0), at(1), at(2), at(13)]


@pytest.mark.parametrize(
    ("policy", "new_runs", "missed"),
    [("coalesce", 1, 9), ("all", 10, 0), ("skip", 1, 9)],
)
def test_restart_on_a_slot_runs_that_slot_on_time(
    org: Organization, dispatcher: Dispatcher, policy: str, new_runs: int, missed: int
) -> None:
    schedule = create(org, misfire_policy=policy)
    dispatcher.run_minutes(0, 2)
    result = dispatcher.tick(at(12, 1))  # 10:12 is 1 s old: on time; 10:03 … 10:11 were missed
    assert result.created == new_runs
    assert triggers(schedule)[at(12)] == RunTrigger.SCHEDULE
    schedule.refresh_from_db()
    assert schedule.missed_count == missed


def test_restart_counts_slots_older_than_the_catchup_window_as_missed(
    org: Organization, dispatcher: Dispatcher
) -> None:
    schedule = create(org, misfire_policy="all", catchup_window_seconds=300)
    dispatcher.run_minutes(0, 2)
    dispatcher.tick(at(12, 30))  # the window starts at 10:07:30
    assert slots(schedule) == [at(0), at(1), at(2), *[at(m) for m in range(8, 13)]]
    schedule.refresh_from_db()
    assert schedule.missed_count == 5


def test_restart_sends_exactly_the_new_runs_once(org: Organization, dispatcher: Dispatcher) -> None:
    schedule = create(org, misfire_policy="all")
    dispatcher.run_minutes(0, 2)
    # A worker ran those three (a queued run unstarted for minutes would be re-sent as a lost message).
    Run.objects.filter(schedule=schedule).update(status=RunStatus.SUCCEEDED)
    dispatcher.tick(at(12, 30))
    dispatcher.tick(at(12, 31))
    ids = list(Run.objects.filter(schedule=schedule).values_list("id", flat=True))
    assert sorted(pk for pk, _ in dispatcher.sent) == sorted(ids)
    assert OutboxEvent.objects.filter(type="run.queued", schedule_id=schedule.pk).count() == len(ids) == 13


# -- pause and resume -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "slots_after_resume", "missed"),
    [("coalesce", [12], 9), ("all", list(range(3, 13)), 0), ("skip", [], 10)],
)
def test_resume_after_pause_follows_the_misfire_policy(
    org: Organization, dispatcher: Dispatcher, policy: str, slots_after_resume: list[int], missed: int
) -> None:
    schedule = create(org, misfire_policy=policy)
    dispatcher.run_minutes(0, 2)
    with time_machine.travel(at(2, 30), tick=False):
        assert schedule_pause(schedule=schedule, note="maintenance")
    dispatcher.run_minutes(3, 11)  # the dispatcher keeps ticking; the paused schedule is left alone
    assert slots(schedule) == [at(0), at(1), at(2)]
    with time_machine.travel(at(12, 30), tick=False):
        assert schedule_resume(schedule=schedule, now=at(12, 30))
    dispatcher.tick(at(12, 31))
    assert slots(schedule) == [at(0), at(1), at(2), *[at(m) for m in slots_after_resume]]
    schedule.refresh_from_db()
    assert schedule.missed_count == missed
    assert schedule.next_run_at == at(13)


# -- restart in the middle of work ----------------------------------------------------------------------------------


def _many(org: Organization, count: int) -> list[Schedule]:
    return [create(org, name=f"s{i}", misfire_policy="all") for i in range(count)]


def test_restart_after_the_first_batch_leaves_no_gap_and_no_duplicate(
    org: Organization, dispatcher: Dispatcher, settings: Settings
) -> None:
    settings.ECHOFLOW = {**settings.ECHOFLOW, "DISPATCH_BATCH_SIZE": 2}
    schedules = _many(org, 5)
    dispatcher.tick(at(0, 1), max_batches=1)  # stopped after one batch of two schedules
    assert sum(len(slots(s)) for s in schedules) == 2
    dispatcher.run_minutes(1, 3)
    for schedule in schedules:
        assert slots(schedule) == [at(0), at(1), at(2), at(3)]


def test_crash_inside_a_batch_rolls_it_back_and_the_next_tick_fills_it(
    org: Organization, dispatcher: Dispatcher, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.ECHOFLOW = {**settings.ECHOFLOW, "DISPATCH_BATCH_SIZE": 2}
    schedules = _many(org, 5)
    real_insert = runs.dispatcher.planned_runs_insert
    calls = {"n": 0}

    def crash_on_second_batch(planned: list[PlannedRun], **kwargs: Any) -> list[NewRun]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("killed mid-batch")
        return real_insert(planned, **kwargs)

    monkeypatch.setattr(runs.dispatcher, "planned_runs_insert", crash_on_second_batch)
    with pytest.raises(RuntimeError):
        dispatcher.tick(at(0, 1))
    monkeypatch.setattr(runs.dispatcher, "planned_runs_insert", real_insert)
    assert sum(len(slots(s)) for s in schedules) == 2  # the first batch committed, the second rolled back
    dispatcher.tick(at(0, 2))  # restart
    dispatcher.tick(at(1, 1))
    for schedule in schedules:
        assert slots(schedule) == [at(0), at(1)]
    assert Run.objects.count() == len({r.idempotency_key for r in Run.objects.all()}) == 10


def test_broker_down_at_send_keeps_runs_queued_and_sends_each_once_later(org: Organization) -> None:
    schedule = create(org)
    sent: list[tuple[int, int]] = []

    def broker_down(rows: list[tuple[int, int]]) -> None:
        raise ConnectionError("broker unreachable")

    with time_machine.travel(at(0, 1), tick=False):
        dispatch_tick(now=at(0, 1), sender=broker_down)
    with time_machine.travel(at(0, 2), tick=False):
        dispatch_tick(now=at(0, 2), sender=sent.extend)
        dispatch_tick(now=at(0, 3), sender=sent.extend)
    assert slots(schedule) == [at(0)]
    assert [pk for pk, _ in sent] == list(Run.objects.filter(schedule=schedule).values_list("id", flat=True))


def test_all_backlog_larger_than_the_cap_is_drained_over_passes_without_gap(
    org: Organization, dispatcher: Dispatcher, settings: Settings
) -> None:
    settings.ECHOFLOW = {**settings.ECHOFLOW, "MISFIRE_ALL_CAP": 3}
    schedule = create(org, misfire_policy="all")
    dispatcher.run_minutes(0, 2)
    created = [dispatcher.tick(at(12, 30 + i)).created for i in range(5)]
    assert created == [3, 3, 3, 1, 0]
    assert slots(schedule) == [at(m) for m in range(13)]


def test_two_dispatchers_ticking_at_once_never_duplicate_a_slot(org: Organization) -> None:
    schedule = create(org, misfire_policy="all")
    first, second = Dispatcher(), Dispatcher()
    for minute in range(5):
        first.tick(at(minute, 1))
        second.tick(at(minute, 1))
        second.tick(at(minute, 2))
    assert slots(schedule) == [at(m) for m in range(5)]
    assert len(first.sent) + len(second.sent) == 5


# -- bounds, jitter, preview, intervals through the dispatcher --------------------------------------------------


def test_loop_of_three_rounds_completes_with_no_next_run(org: Organization, dispatcher: Dispatcher) -> None:
    schedule = create(org, trigger_kind="interval", interval_seconds=60, start_at=T0.isoformat(), max_runs=3)
    dispatcher.run_minutes(0, 5)
    assert slots(schedule) == [at(0), at(1), at(2)]
    rounds = Run.objects.filter(schedule=schedule).order_by("slot").values_list("round_index", flat=True)
    assert list(rounds) == [1, 2, 3]
    schedule.refresh_from_db()
    assert schedule.state == ScheduleState.COMPLETED
    assert schedule.next_run_at is None


def test_schedule_completes_after_its_end_at(org: Organization, dispatcher: Dispatcher) -> None:
    schedule = create(org, end_at=at(2).isoformat())
    dispatcher.run_minutes(0, 4)
    assert slots(schedule) == [at(0), at(1), at(2)]
    schedule.refresh_from_db()
    assert schedule.state == ScheduleState.COMPLETED and schedule.next_run_at is None


def test_interval_runs_stay_on_the_grid_however_late_the_ticks(org: Organization, dispatcher: Dispatcher) -> None:
    schedule = create(org, trigger_kind="interval", interval_seconds=10, start_at=T0.isoformat())
    lateness = [0.2, 3.9, 1.5, 4.8, 0.0, 2.2] * 30
    for k, late in enumerate(lateness):
        dispatcher.tick(T0 + timedelta(seconds=10 * k + late))
    assert slots(schedule) == [T0 + timedelta(seconds=10 * k) for k in range(len(lateness))]


def test_jittered_run_keeps_its_slot_and_waits_for_its_due_time(org: Organization, dispatcher: Dispatcher) -> None:
    schedule = create(org, jitter_seconds=30)
    dispatcher.tick(at(0, 1))
    run = Run.objects.get(schedule=schedule)
    offset = jitter_offset(schedule_id=schedule.pk, slot=at(0), jitter_seconds=30, period=timedelta(minutes=1))
    assert run.slot == at(0)
    assert run.due_at == at(0) + offset
    assert timedelta(0) <= run.due_at - run.slot <= timedelta(seconds=30)
    if run.due_at > at(0, 1):
        assert dispatcher.sent == []
    dispatcher.tick(run.due_at)
    assert [pk for pk, _ in dispatcher.sent] == [run.pk]


def test_dispatcher_fires_exactly_the_preview_across_dst(org: Organization, dispatcher: Dispatcher) -> None:
    zone = ZoneInfo("America/New_York")
    created = datetime(2026, 11, 1, 4, 10, tzinfo=UTC)
    schedule = create(org, cron="*/20 1 * * *", timezone="America/New_York", now=created)
    preview = schedule_preview(trigger=schedule.trigger, count=7, after=created)
    for slot in preview:
        dispatcher.tick(slot + timedelta(seconds=1))
    assert slots(schedule) == preview
    assert [s.astimezone(zone).strftime("%H:%M%z") for s in preview] == [
        "01:00-0400",
        "01:20-0400",
        "01:40-0400",
        "01:00-0500",
        "01:20-0500",
        "01:40-0500",
        "01:00-0500",
    ]


def test_dispatcher_fires_a_dst_gap_slot_once(org: Organization, dispatcher: Dispatcher) -> None:
    created = datetime(2026, 3, 8, 5, 0, tzinfo=UTC)
    schedule = create(org, cron="0,30 2 * * *", timezone="America/New_York", now=created)
    for minute in range(0, 24 * 60, 10):  # a tick every 10 minutes, for a day
        dispatcher.tick(created + timedelta(minutes=minute, seconds=1))
    assert slots(schedule) == [datetime(2026, 3, 8, 7, 0, tzinfo=UTC)]


# -- edits ------------------------------------------------------------------------------------------------------


def test_edit_of_the_trigger_recomputes_next_run_from_now(org: Organization, dispatcher: Dispatcher) -> None:
    schedule = create(org)
    dispatcher.run_minutes(0, 2)
    with time_machine.travel(at(2, 30), tick=False):
        schedule, changes = schedule_update(schedule=schedule, data={"cron": "*/5 * * * *"}, now=at(2, 30))
    assert "cron" in changes
    assert schedule.next_run_at == at(5)
    dispatcher.run_minutes(3, 10)
    assert slots(schedule) == [at(0), at(1), at(2), at(5), at(10)]


def test_edit_on_a_slot_that_already_ran_does_not_run_it_twice(org: Organization, dispatcher: Dispatcher) -> None:
    schedule = create(org)
    dispatcher.run_minutes(0, 5, second=0)  # dispatched exactly on each slot
    with time_machine.travel(at(5), tick=False):
        schedule, _ = schedule_update(schedule=schedule, data={"cron": "*/5 * * * *"}, now=at(5))
    assert schedule.next_run_at == at(5)  # the new trigger's first slot is the one that just ran
    dispatcher.run_minutes(5, 10, second=0)
    assert slots(schedule) == [at(0), at(1), at(2), at(3), at(4), at(5), at(10)]


def test_edit_that_leaves_the_trigger_alone_keeps_next_run(org: Organization, dispatcher: Dispatcher) -> None:
    schedule = create(org, cron="*/5 * * * *")
    dispatcher.tick(at(0, 1))
    with time_machine.travel(at(3), tick=False):
        schedule, _ = schedule_update(schedule=schedule, data={"description": "now documented"}, now=at(3))
    assert schedule.next_run_at == at(5)


def test_edit_while_a_slot_is_due_does_not_drop_it(org: Organization, dispatcher: Dispatcher) -> None:
    schedule = create(org)
    dispatcher.run_minutes(0, 4)
    # 10:05 is due; the dispatcher has not ticked yet when the cron is changed to one that also has 10:05.
    with time_machine.travel(at(5, 0.5), tick=False):
        schedule, _ = schedule_update(schedule=schedule, data={"cron": "*/5 * * * *"}, now=at(5, 0.5))
    dispatcher.tick(at(5, 1))
    assert at(5) in slots(schedule)


def test_once_in_the_past_runs_now_when_asked_even_beyond_the_window(org: Organization, dispatcher: Dispatcher) -> None:
    now = at(0)
    schedule = create(
        org,
        trigger_kind="once",
        cron="",
        run_at=(now - timedelta(hours=2)).isoformat(),
        run_now_if_past=True,
        now=now,
    )
    dispatcher.tick(now + timedelta(seconds=1))
    assert Run.objects.filter(schedule=schedule).count() == 1
