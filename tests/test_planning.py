"""Which slots of a due schedule become runs (schedules/planning.py): misfire policies, catch-up window, bounds.

Pure: schedules here are unsaved model instances; the dispatcher end of it is in test_misfire_restart.py.
A tick at ``now`` treats slots at most ``GRACE`` old as on time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import takewhile
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schedules.models import MisfirePolicy, Schedule
from schedules.planning import SlotPlan, plan_due_slots

GRACE = timedelta(seconds=5)
T = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)


def minute(m: int, second: int = 0) -> datetime:
    return T + timedelta(minutes=m, seconds=second)


def make(**fields: Any) -> Schedule:
    values: dict[str, Any] = {
        "trigger_kind": "cron",
        "cron": "* * * * *",
        "timezone": "UTC",
        "catchup_window_seconds": 3600,
        "misfire_policy": MisfirePolicy.COALESCE,
        "runs_count": 0,
        "created_at": T - timedelta(days=400),
    }
    values.update(fields)
    return Schedule(**values)


def plan(schedule: Schedule, now: datetime, all_cap: int = 100) -> SlotPlan:
    return plan_due_slots(schedule=schedule, now=now, grace=GRACE, all_cap=all_cap)


def test_on_time_slot_runs_and_next_slot_follows() -> None:
    result = plan(make(next_run_at=minute(0)), now=minute(0, 1))
    assert result.slots == [(minute(0), False)]
    assert result.missed == 0
    assert result.next_run_at == minute(1)


def test_coalesce_runs_one_catchup_for_the_latest_missed_slot() -> None:
    # Dispatch stopped after 10:00; it comes back at 10:10:30. Slots 10:01 … 10:10 were missed.
    result = plan(make(next_run_at=minute(1)), now=minute(10, 30))
    assert result.slots == [(minute(10), True)]
    assert result.missed == 9
    assert result.next_run_at == minute(11)


def test_coalesce_with_an_on_time_slot_runs_only_that_slot() -> None:
    result = plan(make(next_run_at=minute(1)), now=minute(10, 2))
    assert result.slots == [(minute(10), False)]
    assert result.missed == 9


def test_all_runs_each_missed_slot() -> None:
    result = plan(make(next_run_at=minute(1), misfire_policy=MisfirePolicy.ALL), now=minute(10, 30))
    assert result.slots == [(minute(m), True) for m in range(1, 11)]
    assert result.missed == 0
    assert result.next_run_at == minute(11)


def test_skip_runs_nothing_and_waits_for_the_next_future_slot() -> None:
    result = plan(make(next_run_at=minute(1), misfire_policy=MisfirePolicy.SKIP), now=minute(10, 30))
    assert result.slots == []
    assert result.missed == 10
    assert result.next_run_at == minute(11)


def test_skip_still_runs_the_on_time_slot() -> None:
    result = plan(make(next_run_at=minute(1), misfire_policy=MisfirePolicy.SKIP), now=minute(10, 1))
    assert result.slots == [(minute(10), False)]
    assert result.missed == 9


def test_slots_older_than_the_catchup_window_are_counted_never_run() -> None:
    schedule = make(next_run_at=minute(1), misfire_policy=MisfirePolicy.ALL, catchup_window_seconds=300)
    result = plan(schedule, now=minute(10, 30))
    # The window starts at 10:05:30: 10:01 … 10:05 are too old.
    assert result.slots == [(minute(m), True) for m in range(6, 11)]
    assert result.missed == 5


def test_catchup_window_zero_runs_only_on_time_slots() -> None:
    schedule = make(next_run_at=minute(1), catchup_window_seconds=0)
    assert plan(schedule, now=minute(10, 30)).slots == []
    assert plan(schedule, now=minute(10, 30)).missed == 10
    assert plan(schedule, now=minute(10, 3)).slots == [(minute(10), False)]


def test_all_plans_at_most_the_cap_per_pass_and_leaves_the_rest_due() -> None:
    start = T - timedelta(hours=1)
    schedule = make(
        trigger_kind="interval", interval_seconds=10, start_at=start, next_run_at=start, misfire_policy="all"
    )
    now = T + timedelta(seconds=30)
    runs: list[datetime] = []
    passes = 0
    while schedule.next_run_at is not None and schedule.next_run_at <= now:
        result = plan(schedule, now=now)
        assert len(result.slots) <= 100
        runs += [slot for slot, _ in result.slots]
        schedule.next_run_at = result.next_run_at
        schedule.runs_count += len(result.slots)
        passes += 1
    # The window starts at 09:00:30: 09:00:00 … 09:00:20 are too old; 09:00:30 … 10:00:30 run, each once, in order.
    assert runs == [start + timedelta(seconds=10 * k) for k in range(3, 364)]
    assert passes == 4
    assert schedule.next_run_at == now + timedelta(seconds=10)


def test_all_cap_is_a_parameter() -> None:
    result = plan(make(next_run_at=minute(1), misfire_policy=MisfirePolicy.ALL), now=minute(10, 30), all_cap=3)
    assert result.slots == [(minute(1), True), (minute(2), True), (minute(3), True)]
    assert result.next_run_at == minute(4)


def test_max_runs_completes_the_schedule_after_its_last_round() -> None:
    schedule = make(next_run_at=minute(1), misfire_policy=MisfirePolicy.ALL, max_runs=3, runs_count=2)
    result = plan(schedule, now=minute(5, 30))
    assert result.slots == [(minute(1), True)]
    assert result.completed


def test_end_at_completes_the_schedule_after_its_last_slot() -> None:
    schedule = make(next_run_at=minute(0), end_at=minute(0))
    result = plan(schedule, now=minute(0, 1))
    assert result.slots == [(minute(0), False)]
    assert result.next_run_at is None and result.completed


def test_once_missed_within_the_window_runs_with_coalesce_and_completes() -> None:
    schedule = make(trigger_kind="once", cron="", run_at=minute(0), next_run_at=minute(0))
    result = plan(schedule, now=minute(20))
    assert result.slots == [(minute(0), True)]
    assert result.completed


def test_once_missed_with_skip_is_counted_and_completes() -> None:
    schedule = make(trigger_kind="once", cron="", run_at=minute(0), next_run_at=minute(0), misfire_policy="skip")
    result = plan(schedule, now=minute(20))
    assert result.slots == [] and result.missed == 1 and result.completed


def test_coalesce_after_a_month_long_pause_runs_once_and_counts_every_missed_slot() -> None:
    # 30 days of a per-minute cron, all inside a 30-day window: one run, never a second one on the next pass.
    days = 30
    schedule = make(next_run_at=minute(1) - timedelta(days=days), catchup_window_seconds=days * 86400 + 3600)
    now = minute(0, 30)
    result = plan(schedule, now=now)
    assert result.slots == [(minute(0), True)]
    assert result.missed == days * 1440 - 1
    assert result.next_run_at == minute(1)
    assert result.next_run_at > now


def test_skip_after_a_week_long_pause_of_an_interval_counts_exactly() -> None:
    start = T - timedelta(days=7)
    schedule = make(
        trigger_kind="interval", interval_seconds=10, start_at=start, next_run_at=start, misfire_policy="skip"
    )
    now = T + timedelta(seconds=7)
    result = plan(schedule, now=now)
    assert result.slots == []
    assert result.missed == 7 * 8640 + 1  # a week of slots, and 10:00:00 itself (7 s old: late, not on time)
    assert result.next_run_at == T + timedelta(seconds=10)


def test_coalesce_of_an_irregular_cron_after_a_long_pause_picks_the_latest_slot() -> None:
    # Every minute of 09:00-09:59 on weekdays, paused for 60 days (2026-06-01 is a Monday): one run, for the
    # latest slot (09:59 today); the count of missed slots is extrapolated past 1,000 and stays close.
    schedule = make(cron="* 9 * * 1-5", catchup_window_seconds=61 * 86400)
    first = schedule.trigger.next_after(T - timedelta(days=60))
    assert first is not None
    schedule.next_run_at = first
    result = plan(schedule, now=minute(0, 30))
    assert result.slots == [(T - timedelta(minutes=1), True)]
    assert result.next_run_at == T + timedelta(days=1, hours=-1)
    exact = len(list(takewhile(lambda s: s < T, schedule.trigger.iter_after(first - timedelta(microseconds=1)))))
    assert exact == 42 * 60  # 3 April, eight full weeks, and this morning
    assert abs(result.missed - (exact - 1)) <= exact // 20


@settings(max_examples=100, deadline=None)
@given(
    policy=st.sampled_from(list(MisfirePolicy)),
    window=st.sampled_from([0, 120, 3600]),
    cron=st.sampled_from(["* * * * *", "*/7 * * * *", "0,30 9-17 * * *", "*/20 * * * * *"]),
    gaps=st.lists(st.integers(1, 6 * 3600), min_size=1, max_size=15),
    cap=st.integers(1, 30),
)
def test_every_slot_is_run_or_counted_missed_exactly_once(
    policy: str, window: int, cron: str, gaps: list[int], cap: int
) -> None:
    schedule = make(cron=cron, misfire_policy=policy, catchup_window_seconds=window, timezone="Europe/London")
    trigger = schedule.trigger
    first = trigger.next_after(T)
    schedule.next_run_at = first
    now = T
    runs: list[datetime] = []
    missed = 0
    for gap in gaps:
        now += timedelta(seconds=gap)
        while schedule.next_run_at is not None and schedule.next_run_at <= now:
            result = plan(schedule, now=now, all_cap=cap)
            runs += [slot for slot, _ in result.slots]
            missed += result.missed
            assert result.next_run_at is None or result.next_run_at > max([s for s, _ in result.slots], default=T)
            schedule.next_run_at = result.next_run_at
    assert runs == sorted(set(runs))
    end = schedule.next_run_at or now
    handled = list(takewhile(lambda s: s < end, trigger.iter_after(T)))
    assert set(runs) <= set(handled)
    assert len(runs) + missed == len(handled)
