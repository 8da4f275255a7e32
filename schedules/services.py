"""Writes about schedules. Every entry point (admin, API, page, commands) calls these."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from echoflow.accounts.models import Organization
from echoflow.audit.services import audit_record
from echoflow.events.bus import EventSpec, event_record
from schedules.models import Schedule, ScheduleState
from schedules.triggers import TriggerKind
from schedules.validation import FIELDS, first_slot, schedule_clean

TRIGGER_FIELDS = {
    "trigger_kind",
    "cron",
    "interval_seconds",
    "run_at",
    "timezone",
    "start_at",
    "end_at",
    "max_runs",
}


class VersionConflict(Exception):
    def __init__(self, current: int) -> None:
        super().__init__(f"the schedule was changed by someone else (now at version {current}); reload and retry")
        self.current = current


def _schedule_event(schedule: Schedule, kind: str, data: dict[str, Any] | None = None) -> None:
    event_record(
        EventSpec(
            type=f"schedule.{kind}",
            organization_id=schedule.organization_id,
            schedule_id=schedule.pk,
            data={
                "name": schedule.name,
                "state": schedule.state,
                "version": schedule.version,
                **(data or {}),
            },
        )
    )


@transaction.atomic
def schedule_create(
    *,
    organization: Organization,
    data: Mapping[str, Any],
    user: AbstractBaseUser | AnonymousUser | None = None,
    now: datetime | None = None,
) -> Schedule:
    now = now or timezone.now()
    allow_past = bool(data.get("run_now_if_past"))
    clean = schedule_clean(data, organization=organization, now=now, allow_past_once=allow_past)
    anchored_at_creation = clean["trigger_kind"] == TriggerKind.INTERVAL and clean.get("start_at") is None
    if anchored_at_creation:
        # Intervals are anchored; without a start the anchor is the moment of creation (whole seconds), and the
        # first run comes one interval later, whatever the sub-second of the request.
        clean["start_at"] = now.replace(microsecond=0)
    schedule = Schedule(organization=organization, **{k: clean[k] for k in FIELDS if k in clean})
    if user is not None and getattr(user, "is_authenticated", False):
        schedule.created_by_id = user.pk
    if anchored_at_creation:
        schedule.next_run_at = schedule.trigger.next_after(clean["start_at"])
    else:
        schedule.next_run_at = first_slot(schedule.trigger, now=now, allow_past_once=allow_past)
    if schedule.next_run_at is None:
        schedule.state = ScheduleState.COMPLETED
        schedule.state_note = "no future slot"
    try:
        with transaction.atomic():
            schedule.save()
    except IntegrityError as exc:
        # Two creates with one name at the same instant: the database's unique constraint decides.
        if "schedule_name_unique_in_org" in str(exc):
            raise ValidationError(
                {"name": f"a schedule named {schedule.name!r} already exists in this organization"}
            ) from None
        raise
    _schedule_event(schedule, "created")
    audit_record(
        action="schedule.create",
        target=schedule,
        organization_id=organization.pk,
        changes={k: clean[k] for k in FIELDS if k in data},
    )
    return schedule


@transaction.atomic
def schedule_update(
    *,
    schedule: Schedule,
    data: Mapping[str, Any],
    expected_version: int | None = None,
    now: datetime | None = None,
) -> tuple[Schedule, dict[str, tuple[Any, Any]]]:
    """Apply a (partial) change; returns the schedule and {field: (before, after)} of what changed.

    A trigger change recomputes ``next_run_at`` from now: slots already run are not run again (their runs keep
    their idempotency keys) and the next one is not dropped.
    """
    now = now or timezone.now()
    locked = Schedule.objects.select_for_update().get(pk=schedule.pk)
    if expected_version is not None and locked.version != expected_version:
        raise VersionConflict(locked.version)
    clean = schedule_clean(data, organization=locked.organization, instance=locked, now=now)
    changes: dict[str, tuple[Any, Any]] = {}
    for field in FIELDS:
        if field in clean and getattr(locked, field) != clean[field]:
            changes[field] = (getattr(locked, field), clean[field])
            setattr(locked, field, clean[field])
    if not changes:
        return locked, {}
    if TRIGGER_FIELDS & set(changes) and locked.state in {ScheduleState.ACTIVE, ScheduleState.COMPLETED}:
        # A slot that was due but not yet dispatched is not dropped by the edit: the new trigger's slots are
        # taken from that moment (late ones then follow the misfire policy).
        due = locked.next_run_at if locked.next_run_at is not None and locked.next_run_at <= now else None
        locked.next_run_at = first_slot(locked.trigger, now=min(now, due) if due else now)
        if locked.next_run_at is None:
            locked.state, locked.state_note = ScheduleState.COMPLETED, "no future slot"
        elif locked.state == ScheduleState.COMPLETED:
            locked.state, locked.state_note = ScheduleState.ACTIVE, ""
    locked.version = F("version") + 1
    locked.save()
    locked.refresh_from_db()
    _schedule_event(locked, "updated", {"changed": sorted(changes)})
    audit_record(action="schedule.update", target=locked, organization_id=locked.organization_id, changes=changes)
    return locked, changes


@transaction.atomic
def schedule_pause(*, schedule: Schedule, note: str = "") -> bool:
    updated = Schedule.objects.filter(pk=schedule.pk, state=ScheduleState.ACTIVE).update(
        state=ScheduleState.PAUSED, state_note=note[:500], version=F("version") + 1
    )
    schedule.refresh_from_db()
    if updated:
        _schedule_event(schedule, "paused", {"note": note})
        audit_record(
            action="schedule.disable", target=schedule, organization_id=schedule.organization_id, changes={"note": note}
        )
    return bool(updated)


@transaction.atomic
def schedule_resume(*, schedule: Schedule, now: datetime | None = None) -> bool:
    """Resume a paused schedule. Its next_run_at is kept, so slots missed while paused follow the misfire policy
    on the next dispatch; the consecutive-failure count starts again."""
    locked = Schedule.objects.select_for_update().get(pk=schedule.pk)
    if locked.state != ScheduleState.PAUSED:
        return False
    now = now or timezone.now()
    if locked.next_run_at is None:
        locked.next_run_at = first_slot(locked.trigger, now=now)
    locked.state = ScheduleState.ACTIVE if locked.next_run_at is not None else ScheduleState.COMPLETED
    locked.state_note = "" if locked.next_run_at is not None else "no future slot"
    locked.consecutive_failures = 0
    locked.version = F("version") + 1
    locked.save()
    locked.refresh_from_db()
    schedule.refresh_from_db()
    _schedule_event(locked, "resumed")
    audit_record(action="schedule.enable", target=locked, organization_id=locked.organization_id)
    return True


@transaction.atomic
def schedule_cancel(*, schedule: Schedule, note: str = "") -> bool:
    """Stop all future slots for good; history is kept."""
    updated = (
        Schedule.objects.filter(pk=schedule.pk)
        .exclude(state=ScheduleState.CANCELLED)
        .update(state=ScheduleState.CANCELLED, state_note=note[:500], next_run_at=None, version=F("version") + 1)
    )
    schedule.refresh_from_db()
    if updated:
        _schedule_event(schedule, "cancelled", {"note": note})
        audit_record(
            action="schedule.cancel", target=schedule, organization_id=schedule.organization_id, changes={"note": note}
        )
    return bool(updated)


@transaction.atomic
def schedule_delete(*, schedule: Schedule) -> None:
    _schedule_event(schedule, "deleted")
    audit_record(
        action="schedule.delete",
        target=schedule,
        organization_id=schedule.organization_id,
        changes={"name": schedule.name},
    )
    schedule.delete()
