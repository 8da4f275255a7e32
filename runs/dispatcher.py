"""The dispatcher: decides what is due and writes runs. It never executes anything.

One tick, safe to run in any number of processes at once:
1. retries whose backoff elapsed go back to ``queued``;
2. due schedules are claimed in batches (``FOR UPDATE SKIP LOCKED`` on the partial index ``schedule_due_idx``),
   their runs inserted in one statement (``ON CONFLICT DO NOTHING`` on the idempotency key), ``next_run_at``
   advanced, all in one transaction;
3. queued runs whose due time came are claimed, marked sent, committed, and only then sent to the broker;
4. queued runs sent long ago and never started (a lost message) are sent again;
5. a heartbeat row records the tick.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from echoflow.events.bus import EventSpec, events_record
from runs.limits import waiting_release
from runs.models import DispatcherHeartbeat, Run, RunStatus, RunTrigger
from runs.sending import send_runs
from runs.transitions import runs_transition_bulk
from schedules.models import Schedule, ScheduleState
from schedules.planning import plan_due_slots
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


def scheduled_run_key(schedule_id: int, slot: datetime) -> str:
    return f"s{schedule_id}:{slot.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}"


def run_from_schedule(
    schedule: Schedule,
    *,
    slot: datetime,
    due_at: datetime,
    trigger: str,
    now: datetime,
    round_index: int | None,
) -> Run:
    return Run(
        organization_id=schedule.organization_id,
        schedule_id=schedule.pk,
        idempotency_key=scheduled_run_key(schedule.pk, slot),
        trigger=trigger,
        slot=slot,
        due_at=due_at,
        status=RunStatus.QUEUED,
        max_attempts=schedule.max_attempts,
        backoff_seconds=schedule.backoff_seconds,
        timeout_seconds=schedule.timeout_seconds,
        priority=schedule.priority,
        round_index=round_index,
        action_kind=schedule.action_kind,
        action_name=schedule.action_name,
        action_config=schedule.action_config,
        payload=schedule.payload,
        created_at=now,
        trace_id=Run.new_trace_id(),
    )


def runs_insert(runs: list[Run]) -> list[Run]:
    """INSERT … ON CONFLICT (idempotency_key) DO NOTHING RETURNING id: returns the runs that are new.

    Django's bulk_create(ignore_conflicts=True) cannot tell which rows were inserted; the dispatcher must know,
    to write exactly one ``run.queued`` event per new run. PostgreSQL and SQLite >= 3.35 share this syntax.
    """
    if not runs:
        return []
    fields = [f for f in Run._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(connection.ops.quote_name(f.column or f.attname) for f in fields)
    row_sql = "(" + ", ".join(["%s"] * len(fields)) + ")"
    by_key = {r.idempotency_key: r for r in runs}
    inserted: list[Run] = []
    table = connection.ops.quote_name(Run._meta.db_table)
    chunk = max(1, 30000 // len(fields))
    with connection.cursor() as cursor:
        for start in range(0, len(runs), chunk):
            part = runs[start : start + chunk]
            params: list[Any] = []
            for run in part:
                params.extend(f.get_db_prep_save(getattr(run, f.attname), connection) for f in fields)
            cursor.execute(
                f"INSERT INTO {table} ({columns}) VALUES {', '.join([row_sql] * len(part))} "
                "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id, idempotency_key",
                params,
            )
            for pk, key in cursor.fetchall():
                run = by_key[key]
                run.pk = pk
                inserted.append(run)
    return inserted


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


def _plan_schedule(schedule: Schedule, *, now: datetime, grace: timedelta, result: TickResult) -> list[Run]:
    """The runs one due schedule gets now; advances its in-memory next_run_at, counters and state."""
    trigger = schedule.trigger
    plan = plan_due_slots(
        schedule=schedule, now=now, grace=grace, all_cap=settings.ECHOFLOW["MISFIRE_ALL_CAP"], trigger=trigger
    )
    runs: list[Run] = []
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
            run_from_schedule(
                schedule,
                slot=slot,
                due_at=due_at,
                trigger=RunTrigger.CATCHUP if is_catchup else RunTrigger.SCHEDULE,
                now=now,
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


def _claim_due_schedules(now: datetime, result: TickResult, batch_size: int) -> int:
    conf = settings.ECHOFLOW
    grace = timedelta(seconds=max(5.0, 5 * conf["DISPATCH_INTERVAL_SECONDS"]))
    with transaction.atomic():
        schedules = list(
            Schedule.objects.select_for_update(skip_locked=True)
            .filter(state=ScheduleState.ACTIVE, next_run_at__lte=now)
            .order_by("next_run_at")[:batch_size]
        )
        if not schedules:
            return 0
        new_runs: list[Run] = []
        for schedule in schedules:
            try:
                new_runs.extend(_plan_schedule(schedule, now=now, grace=grace, result=result))
            except Exception as exc:
                # One broken schedule never stops the dispatcher: it is paused with the reason, the rest go on.
                logger.exception("dispatch: schedule %s cannot be planned", schedule.pk)
                schedule.state = ScheduleState.PAUSED
                schedule.state_note = f"paused by the dispatcher: {exc}"[:500]
        inserted = runs_insert(new_runs)
        # Count only runs really written: a slot refused as a duplicate must not use up a max_runs round.
        inserted_per_schedule = Counter(r.schedule_id for r in inserted)
        for schedule in schedules:
            schedule.runs_count += inserted_per_schedule.get(schedule.pk, 0)
        Schedule.objects.bulk_update(
            schedules, ["next_run_at", "state", "state_note", "runs_count", "missed_count"], batch_size=1000
        )
        events_record(
            EventSpec(
                type="run.queued",
                organization_id=r.organization_id,
                schedule_id=r.schedule_id,
                run_id=r.pk,
                attempt=0,
                data={"status": RunStatus.QUEUED, "slot": r.slot.isoformat() if r.slot else None},
            )
            for r in inserted
        )
        result.schedules += len(schedules)
        result.created += len(inserted)
        return len(schedules)


_MAX_RESEND_DOUBLINGS = 5


def _claim_for_sending(now: datetime, limit: int, *, resend: bool) -> list[tuple[int, int]]:
    """Claim queued runs to send: never sent yet (``resend=False``) or sent and evidently lost (``resend=True``).

    Each send pushes ``resend_at`` out by RESEND_AFTER · 2^(sends so far), capped: a lost message is recovered
    quickly, while a run that only waits behind a long queue gets a copy now and then, not every tick.
    """
    resend_after = settings.ECHOFLOW["RESEND_AFTER_SECONDS"]
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
            wait = resend_after * 2 ** min(sends, _MAX_RESEND_DOUBLINGS)
            Run.objects.filter(pk__in=pks).update(
                enqueued_at=now, sends=sends + 1, resend_at=now + timedelta(seconds=wait)
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
    for _ in range(max_batches):
        if _claim_due_schedules(now, result, batch_size) < batch_size:
            break
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
