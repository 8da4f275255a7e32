"""Backfill: runs for the past slots of a schedule in [from, to), as if the dispatcher had planned them.

Each run gets the dispatcher's own idempotency key for its slot (``scheduled_run_key``) and is written with the
dispatcher's ``INSERT … ON CONFLICT DO NOTHING``, so a slot that already has a run (scheduled, caught up or
backfilled before) is left alone: backfilling the same range twice, or racing the dispatcher, creates nothing
twice. Slots come from the schedule's trigger (``Trigger.iter_after``), the arithmetic the dispatcher and the
preview use. A backfill never consumes ``max_runs`` and never moves ``next_run_at``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from echoflow.audit.services import audit_record
from echoflow.events.bus import EventSpec, events_record
from runs.models import Run, RunStatus, RunTrigger
from runs.run_writes import run_from_schedule, runs_insert, scheduled_run_key
from schedules.models import Schedule

_TICK = timedelta(microseconds=1)


@dataclass(frozen=True)
class BackfillResult:
    slots: int  # slots of the trigger in [start, end)
    created: int  # new runs (0 on a dry run)
    existing: int  # slots that already had a run and were left alone
    first_slot: datetime | None = None
    last_slot: datetime | None = None
    run_ids: list[int] = field(default_factory=list)
    dry_run: bool = False


def backfill_slots(*, schedule: Schedule, start: datetime, end: datetime, cap: int) -> list[datetime]:
    """The schedule's slots in [start, end), at most ``cap`` of them (one more means: beyond the cap)."""
    slots: list[datetime] = []
    try:
        for slot in schedule.trigger.iter_after(start - _TICK):
            if slot >= end or len(slots) > cap:
                break
            slots.append(slot)
    except ValueError as exc:  # a definition that no longer validates (a cron edited in the database by hand)
        raise ValidationError({"schedule": f"its trigger cannot be evaluated: {exc}"}) from None
    return slots


def _check_range(start: datetime, end: datetime, now: datetime) -> None:
    errors: dict[str, str] = {}
    for name, value in (("from", start), ("to", end)):
        if value.tzinfo is None:
            errors[name] = "needs a UTC offset or time zone (e.g. 2026-10-01T08:00:00+02:00)"
    if errors:
        raise ValidationError(errors)
    if end <= start:
        raise ValidationError({"to": f"{end.isoformat()} must be after from ({start.isoformat()})"})
    if end > now:
        raise ValidationError(
            {"to": f"{end.isoformat()} is in the future (now is {now.isoformat()}); backfill only creates past slots"}
        )


def schedule_backfill(
    *, schedule: Schedule, start: datetime, end: datetime, now: datetime | None = None, dry_run: bool = False
) -> BackfillResult:
    """Create a ``backfill`` run for every slot of ``schedule`` in [start, end) that has none yet.

    Raises ValidationError naming ``from`` or ``to`` for a bad range or one holding more slots than
    ``ECHOFLOW["BACKFILL_CAP"]``; then nothing is written. ``dry_run`` counts without writing.
    """
    now = now or timezone.now()
    _check_range(start, end, now)
    cap = settings.ECHOFLOW["BACKFILL_CAP"]
    slots = backfill_slots(schedule=schedule, start=start, end=end, cap=cap)
    if len(slots) > cap:
        raise ValidationError(
            {
                "to": f"[from, to) holds more than {cap} slots of this schedule (the backfill cap, "
                f"ECHOFLOW_BACKFILL_CAP); the first {cap} end at {slots[cap - 1].isoformat()}: narrow the range "
                "or backfill it in parts"
            }
        )
    first, last = (slots[0], slots[-1]) if slots else (None, None)
    keys = [scheduled_run_key(schedule.pk, slot) for slot in slots]
    if dry_run:
        existing = Run.objects.filter(idempotency_key__in=keys).count() if keys else 0
        return BackfillResult(
            slots=len(slots), created=0, existing=existing, first_slot=first, last_slot=last, dry_run=True
        )
    with transaction.atomic():
        inserted = runs_insert(
            [
                run_from_schedule(
                    schedule, slot=slot, due_at=slot, trigger=RunTrigger.BACKFILL, now=now, round_index=None
                )
                for slot in slots
            ]
        )
        events_record(
            EventSpec(
                type="run.queued",
                organization_id=run.organization_id,
                schedule_id=run.schedule_id,
                run_id=run.pk,
                attempt=0,
                data={
                    "status": RunStatus.QUEUED,
                    "slot": run.slot.isoformat() if run.slot else None,
                    "trigger": RunTrigger.BACKFILL,
                },
            )
            for run in inserted
        )
        audit_record(
            action="schedule.backfill",
            target=schedule,
            organization_id=schedule.organization_id,
            changes={"from": start, "to": end, "slots": len(slots), "created": len(inserted)},
        )
    return BackfillResult(
        slots=len(slots),
        created=len(inserted),
        existing=len(slots) - len(inserted),
        first_slot=first,
        last_slot=last,
        run_ids=[run.pk for run in inserted],
    )
