"""Which slots of a due schedule become runs: misfire policy, catch-up window, bounds. Pure, no queries.

A slot is *on time* when it is at most ``grace`` old at dispatch (the normal lag of a tick). Older slots were
*missed* (dispatch was down, the schedule was paused): those older than the catch-up window are only counted;
the rest follow the misfire policy. See docs/time.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from schedules.models import MisfirePolicy, Schedule
from schedules.triggers import Trigger

# Counting missed slots of a fine-grained schedule after a long outage is bounded; beyond it the planner jumps.
_MAX_SLOT_WALK = 10_000


@dataclass
class SlotPlan:
    slots: list[tuple[datetime, bool]] = field(default_factory=list)  # (slot, is_catchup)
    missed: int = 0
    next_run_at: datetime | None = None

    @property
    def completed(self) -> bool:
        return self.next_run_at is None


def plan_due_slots(
    *,
    schedule: Schedule,
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

    slot = schedule.next_run_at
    # Slots too old for the catch-up window: counted, never run.
    walked = 0
    while slot is not None and slot <= now and slot < window_start and slot < late_cutoff:
        plan.missed += 1
        walked += 1
        if walked >= _MAX_SLOT_WALK:
            slot = trigger.next_after(window_start - timedelta(microseconds=1))
            break
        slot = trigger.next_after(slot)

    late: list[datetime] = []
    on_time: list[datetime] = []
    while slot is not None and slot <= now:
        (on_time if slot >= late_cutoff else late).append(slot)
        slot = trigger.next_after(slot)
        if schedule.misfire_policy == MisfirePolicy.ALL and len(late) >= all_cap:
            break  # the rest of the backlog is planned on the next pass: next_run_at stays due
        if len(late) + len(on_time) >= _MAX_SLOT_WALK:
            break
    following = slot

    if schedule.misfire_policy == MisfirePolicy.ALL:
        chosen = [(s, True) for s in late]
    elif schedule.misfire_policy == MisfirePolicy.COALESCE and late and not on_time:
        chosen = [(late[-1], True)]
        plan.missed += len(late) - 1
    else:
        chosen = []
        plan.missed += len(late)
    chosen += [(s, False) for s in on_time]

    if remaining is not None and len(chosen) >= remaining:
        chosen = chosen[:remaining]
        following = None
    plan.slots = chosen
    plan.next_run_at = following
    return plan
