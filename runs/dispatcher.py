"""The dispatcher: decides what is due and writes runs. It never executes anything.

One tick, safe to run in any number of processes at once:
1. retries whose backoff elapsed go back to ``queued``; waiting runs whose limit opened are released;
2. due schedules are claimed in batches (``FOR UPDATE SKIP LOCKED`` on the partial index ``schedule_due_idx``),
   their runs and ``run.queued`` events written (``ON CONFLICT DO NOTHING`` on the idempotency key), already
   marked sent when due, and ``next_run_at`` advanced, all in one transaction; after its commit the batch's due
   runs are sent to the broker, before the next batch is claimed (runs/run_writes.py, runs/sending.py); the first
   batch is smaller (``DISPATCH_FIRST_BATCH_SIZE``), so that workers start on a large slot's first runs while the
   rest of it is still being written;
3. other queued runs whose due time came (ad-hoc, released, retried, jittered) are claimed, marked sent,
   committed, and only then sent;
4. queued runs sent long ago and never started (a lost message) are sent again;
5. a heartbeat row records the tick.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import Counter
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from runs.limits import waiting_release
from runs.models import DispatcherHeartbeat, Run, RunStatus, RunTrigger
from runs.run_writes import PlannedRun, planned_runs_insert, rows_fetch, schedules_save_plan
from runs.sending import more_follows, send_runs
from runs.transitions import runs_transition_bulk
from schedules.models import Schedule, ScheduleState
from schedules.planning import DueSchedule, plan_due_slots
from schedules.triggers import jitter_offset

logger = logging.getLogger(__name__)

Sender = Callable[[list[tuple[int, int]]], None]


@dataclass
class TickResult:
    schedules: int = 0
    created: int = 0
    missed: int = 0
    completed: int = 0
    retried: int = 0
    released: int = 0
    enqueued: int = 0
    resent: int = 0
    duration_ms: int = 0


def _release_retries(now: datetime, result: TickResult, limit: int) -> None:
    with transaction.atomic():
        due = list(
            Run.objects.select_for_update(skip_locked=True)
            .filter(status=RunStatus.RETRYING, next_attempt_at__lte=now)
            .order_by("next_attempt_at")
            .only("id", "status", "organization_id", "schedule_id", "attempts")[:limit]
        )
        moved = runs_transition_bulk(
            runs=due,
            to=RunStatus.QUEUED,
            sources=[RunStatus.RETRYING],
            enqueued_at=None,
            resend_at=None,
            sends=0,
            due_at=now,
        )
        result.retried += len(moved)


def _plan_schedule(
    schedule: DueSchedule, *, now: datetime, grace: timedelta, all_cap: int, result: TickResult
) -> list[PlannedRun]:
    """The runs one due schedule gets now; advances its in-memory next_run_at, counters and state."""
    trigger = schedule.trigger
    plan = plan_due_slots(schedule=schedule, now=now, grace=grace, all_cap=all_cap, trigger=trigger)
    runs: list[PlannedRun] = []
    for slot, is_catchup in plan.slots:
        due_at = slot
        if schedule.jitter_seconds:
            due_at = slot + jitter_offset(
                schedule_id=schedule.pk,
                slot=slot,
                jitter_seconds=schedule.jitter_seconds,
                period=trigger.period_hint(slot),
            )
        runs.append(
            PlannedRun(
                schedule=schedule,
                slot=slot,
                due_at=due_at,
                trigger=RunTrigger.CATCHUP if is_catchup else RunTrigger.SCHEDULE,
                round_index=schedule.runs_count + len(runs) + 1,
            )
        )
    schedule.missed_count += plan.missed
    result.missed += plan.missed
    schedule.next_run_at = plan.next_run_at
    if plan.completed:
        schedule.state = ScheduleState.COMPLETED
        schedule.state_note = "no future slot"
        result.completed += 1
    return runs


def _claim_due_schedules(now: datetime, result: TickResult, batch_size: int, sender: Sender) -> int:
    """Claim one batch of due schedules and write their runs; after the commit, send the runs that are due."""
    conf = settings.ECHOFLOW
    grace = timedelta(seconds=max(5.0, 5 * conf["DISPATCH_INTERVAL_SECONDS"]))
    all_cap = conf["MISFIRE_ALL_CAP"]
    with transaction.atomic():
        query = (
            Schedule.objects.select_for_update(skip_locked=True)
            .filter(state=ScheduleState.ACTIVE, next_run_at__lte=now)
            .order_by("next_run_at")
            .values_list(*DueSchedule.COLUMNS)[:batch_size]
        )
        schedules = [DueSchedule(*row) for row in rows_fetch(query)]
        if not schedules:
            return 0
        planned: list[PlannedRun] = []
        for schedule in schedules:
            try:
                planned.extend(_plan_schedule(schedule, now=now, grace=grace, all_cap=all_cap, result=result))
            except Exception as exc:
                # One broken schedule never stops the dispatcher: it is paused with the reason, the rest go on.
                logger.exception("dispatch: schedule %s cannot be planned", schedule.pk)
                schedule.state = ScheduleState.PAUSED
                schedule.state_note = f"paused by the dispatcher: {exc}"[:500]
        inserted = planned_runs_insert(planned, now=now, resend_at=now + timedelta(seconds=_resend_wait(sends=0)))
        # Count only runs really written: a slot refused as a duplicate must not use up a max_runs round.
        inserted_per_schedule = Counter(r.schedule_id for r in inserted)
        for schedule in schedules:
            schedule.runs_count += inserted_per_schedule.get(schedule.pk, 0)
        schedules_save_plan(schedules)
        result.schedules += len(schedules)
        result.created += len(inserted)
    # Only after the commit: a worker must find the run its message names. A full batch is part of a burst whose
    # next batch follows at once: its runs go out in full messages (runs.sending.more_follows).
    with more_follows() if len(schedules) == batch_size else nullcontext():
        result.enqueued += _send([(r.id, r.priority) for r in inserted if r.marked_sent], sender)
    return len(schedules)


_MAX_RESEND_DOUBLINGS = 5


def _resend_wait(*, sends: int) -> float:
    """Seconds until a run sent ``sends`` times before this send counts as lost: RESEND_AFTER · 2^sends, capped."""
    return float(settings.ECHOFLOW["RESEND_AFTER_SECONDS"] * 2 ** min(sends, _MAX_RESEND_DOUBLINGS))


def _claim_for_sending(now: datetime, limit: int, *, resend: bool) -> list[tuple[int, int]]:
    """Claim queued runs to send: never sent yet (``resend=False``) or sent and evidently lost (``resend=True``).

    Each send pushes ``resend_at`` out by RESEND_AFTER · 2^(sends so far), capped: a lost message is recovered
    quickly, while a run that only waits behind a long queue gets a copy now and then, not every tick.
    """
    with transaction.atomic():
        query = Run.objects.select_for_update(skip_locked=True).filter(status=RunStatus.QUEUED)
        if resend:
            query = query.filter(resend_at__lte=now).order_by("resend_at")
        else:
            query = query.filter(enqueued_at__isnull=True, due_at__lte=now).order_by("-priority", "due_at")
        rows = list(query.values_list("id", "priority", "sends")[:limit])
        by_sends: dict[int, list[int]] = {}
        for pk, _, sends in rows:
            by_sends.setdefault(sends, []).append(pk)
        for sends, pks in by_sends.items():
            Run.objects.filter(pk__in=pks).update(
                enqueued_at=now, sends=sends + 1, resend_at=now + timedelta(seconds=_resend_wait(sends=sends))
            )
        return [(pk, priority) for pk, priority, _ in rows]


def _send(rows: list[tuple[int, int]], sender: Sender) -> int:
    if not rows:
        return 0
    try:
        sender(rows)
    except Exception:
        # The broker is down: forget the send mark so the next tick tries again (the runs stay queued).
        logger.exception("dispatch: could not send %d run(s); they stay queued", len(rows))
        Run.objects.filter(pk__in=[pk for pk, _ in rows], status=RunStatus.QUEUED).update(
            enqueued_at=None, resend_at=None, sends=F("sends") - 1
        )
        return 0
    return len(rows)


def dispatch_tick(*, now: datetime | None = None, sender: Sender | None = None, max_batches: int = 50) -> TickResult:
    started = time.monotonic()
    now = now or timezone.now()
    sender = sender or send_runs
    conf = settings.ECHOFLOW
    batch_size = conf["DISPATCH_BATCH_SIZE"]
    result = TickResult()

    _release_retries(now, result, batch_size)
    result.released = waiting_release(limit=batch_size)
    # A small first batch: its runs are committed and sent while the rest of a large slot is still being planned,
    # so that workers start on a burst at once instead of after all of it is written (docs/benchmarks.md §2).
    size = min(conf["DISPATCH_FIRST_BATCH_SIZE"], batch_size)
    for _ in range(max_batches):
        if _claim_due_schedules(now, result, size, sender) < size:
            break
        size = batch_size
    for _ in range(max_batches):
        rows = _claim_for_sending(now, batch_size, resend=False)
        result.enqueued += _send(rows, sender)
        if len(rows) < batch_size:
            break
    rows = _claim_for_sending(now, batch_size, resend=True)
    if rows:
        logger.warning("dispatch: re-sending %d queued run(s) whose message was evidently lost", len(rows))
    result.resent += _send(rows, sender)

    result.duration_ms = int((time.monotonic() - started) * 1000)
    DispatcherHeartbeat.objects.update_or_create(
        name="dispatcher",
        defaults={
            "beat_at": timezone.now(),
            "hostname": socket.gethostname(),
            "last_tick_ms": result.duration_ms,
            "last_created": result.created,
            "last_enqueued": result.enqueued,
        },
    )
    return result
