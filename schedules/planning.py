"""Which slots of a due schedule become runs: misfire policy, catch-up window, bounds. Pure, no queries.

A slot is *on time* when it is at most ``grace`` old at dispatch (the normal lag of a tick). Older slots were
*missed* (dispatch was down, the schedule was paused): those older than the catch-up window are only counted;
the rest follow the misfire policy. See docs/time.md.

Every pass ends with ``next_run_at`` on a slot that was neither run nor counted, so a crash or restart between
passes neither repeats nor loses one. Coalesce and skip always finish a backlog in one pass (they never leave a
past ``next_run_at``, which would make the next pass coalesce again); ``all`` plans at most ``all_cap`` missed
slots per pass and leaves the rest due for the next one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import ClassVar

from schedules.models import MisfirePolicy, Schedule
from schedules.triggers import Trigger, TriggerKind, trigger_of

# Missed cron slots are counted one by one up to this many per stretch and pass; beyond it (a long outage of a
# fine-grained schedule) the count is extrapolated from the average gap so one schedule cannot stall a tick.
# Interval slots are always counted exactly, by arithmetic.
_MAX_SLOT_WALK = 1_000
_TICK = timedelta(microseconds=1)


@dataclass(slots=True)
class DueSchedule:
    """What the dispatcher reads of a claimed schedule to plan it, and writes back: plain values.

    Loaded with ``values_list`` (a model instance costs ten times as much to build, which mattered when a
    dispatcher claims thousands of schedules a second); the run's other settings are copied from the row by the
    database (runs/run_writes.py).
    """

    id: int
    organization_id: int
    trigger_kind: str
    cron: str
    interval_seconds: int | None
    run_at: datetime | None
    timezone: str
    start_at: datetime | None
    end_at: datetime | None
    max_runs: int | None
    catchup_window_seconds: int
    misfire_policy: str
    jitter_seconds: int
    created_at: datetime
    # Written back by the dispatcher (runs.run_writes.PLAN_FIELDS).
    state: str
    state_note: str
    next_run_at: datetime | None
    runs_count: int
    missed_count: int

    COLUMNS: ClassVar[tuple[str, ...]]

    @property
    def pk(self) -> int:
        return self.id

    @property
    def trigger(self) -> Trigger:
        return trigger_of(self)

    @classmethod
    def of(cls, schedule: Schedule) -> DueSchedule:
        return cls(*(getattr(schedule, name) for name in cls.COLUMNS))


DueSchedule.COLUMNS = tuple(f.name for f in fields(DueSchedule))


@dataclass
class SlotPlan:
    slots: list[tuple[datetime, bool]] = field(default_factory=list)  # (slot, is_catchup)
    missed: int = 0
    next_run_at: datetime | None = None

    @property
    def completed(self) -> bool:
        return self.next_run_at is None


@dataclass(frozen=True)
class _Span:
    """The slots from a first slot up to (not including) an end instant."""

    count: int
    last: datetime | None  # the latest of them
    following: datetime | None  # the first slot at or after the end; None when the trigger has no more


def _span(trigger: Trigger, first: datetime | None, end: datetime) -> _Span:
    if first is None or first >= end:
        return _Span(0, None, first)
    if trigger.kind == TriggerKind.INTERVAL and trigger.interval_seconds:
        return _interval_span(trigger, first, end)
    count, last = 0, first
    slot: datetime | None = first
    while slot is not None and slot < end:
        count, last = count + 1, slot
        if count >= _MAX_SLOT_WALK:
            return _extrapolated_span(trigger, first, slot, count, end)
        slot = trigger.next_after(slot)
    return _Span(count, last, slot)


def _interval_span(trigger: Trigger, first: datetime, end: datetime) -> _Span:
    assert trigger.interval_seconds is not None
    step = timedelta(seconds=trigger.interval_seconds)
    # ``first`` is the stored next_run_at; the slots after it are on the trigger's anchor + k·N grid.
    aligned = trigger.next_after(first)
    if aligned is None or aligned >= end:
        return _Span(1, first, aligned)
    limit = end - _TICK if trigger.end_at is None else min(end - _TICK, trigger.end_at)
    extra = (limit - aligned) // step + 1
    last = aligned + (extra - 1) * step
    return _Span(1 + extra, last, trigger.next_after(last))


def _extrapolated_span(trigger: Trigger, first: datetime, reached: datetime, walked: int, end: datetime) -> _Span:
    following = trigger.next_after(end - _TICK)
    last = _last_slot_before(trigger, end, floor=reached)
    average_gap = (reached - first) / max(walked - 1, 1)
    extra = round((last - reached) / average_gap) if average_gap else 0
    return _Span(walked + extra, last, following)


def _last_slot_before(trigger: Trigger, end: datetime, *, floor: datetime) -> datetime:
    """The latest slot in [floor, end), where ``floor`` is itself a slot before ``end``.

    Looks back from ``end`` over windows that double in size, then walks forward inside the first window that
    holds a slot: a few dozen next-slot computations, however long the stretch.
    """
    lookback = timedelta(seconds=1)
    while True:
        start = max(end - lookback, floor)
        slot = trigger.next_after(start - _TICK)
        if slot is not None and slot < end:
            latest = slot
            for following in trigger.iter_after(slot):
                if following >= end:
                    break
                latest = following
            return latest
        if start == floor:
            return floor
        lookback *= 2


def plan_due_slots(
    *,
    schedule: Schedule | DueSchedule,
    now: datetime,
    grace: timedelta,
    all_cap: int,
    trigger: Trigger | None = None,
) -> SlotPlan:
    trigger = trigger or schedule.trigger
    plan = SlotPlan()
    window_start = now - timedelta(seconds=schedule.catchup_window_seconds)
    late_cutoff = now - grace
    remaining = None if schedule.max_runs is None else max(schedule.max_runs - schedule.runs_count, 0)

    # Slots too old for the catch-up window: counted, never run.
    too_old = _span(trigger, schedule.next_run_at, min(window_start, late_cutoff))
    plan.missed += too_old.count
    slot = too_old.following

    # Late slots: missed, but inside the catch-up window.
    chosen: list[tuple[datetime, bool]] = []
    backlog_left = False
    late_count, latest_late = 0, None
    if schedule.misfire_policy == MisfirePolicy.ALL:
        while slot is not None and slot < late_cutoff and len(chosen) < all_cap:
            chosen.append((slot, True))
            slot = trigger.next_after(slot)
        # The rest of the backlog is planned on the next pass: next_run_at stays due.
        backlog_left = slot is not None and slot < late_cutoff
    else:
        late = _span(trigger, slot, late_cutoff)
        late_count, latest_late, slot = late.count, late.last, late.following

    # On-time slots (within the normal lag of a tick) always run.
    on_time: list[datetime] = []
    while not backlog_left and slot is not None and slot <= now and len(on_time) < _MAX_SLOT_WALK:
        on_time.append(slot)
        slot = trigger.next_after(slot)

    if schedule.misfire_policy == MisfirePolicy.COALESCE and latest_late is not None and not on_time:
        chosen.append((latest_late, True))
        plan.missed += late_count - 1
    else:
        plan.missed += late_count
    chosen += [(s, False) for s in on_time]

    following = slot
    if remaining is not None and len(chosen) >= remaining:
        chosen = chosen[:remaining]
        following = None
    plan.slots = chosen
    plan.next_run_at = following
    return plan
