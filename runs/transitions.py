"""The one owner of run state changes. Each transition is a conditional update plus its lifecycle event.

Callers hold a transaction; a False return means another process changed the run first, which is normal
(a duplicate delivery, a cancel racing a finish, two dispatchers).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db.models.lookups import In

from echoflow.events.bus import EventSpec, event_record, events_record
from echoflow.unindexed import unindexed_in
from runs.models import Run, RunStatus

EVENT_FOR_STATUS = {
    RunStatus.QUEUED: "run.queued",
    RunStatus.WAITING: "run.waiting",
    RunStatus.RUNNING: "run.started",
    RunStatus.RETRYING: "run.retrying",
    RunStatus.SUCCEEDED: "run.succeeded",
    RunStatus.FAILED: "run.failed",
    RunStatus.TIMED_OUT: "run.timed_out",
    RunStatus.CANCELLED: "run.cancelled",
    RunStatus.SKIPPED: "run.skipped",
}

ALLOWED = {
    RunStatus.QUEUED: {RunStatus.RUNNING, RunStatus.WAITING, RunStatus.CANCELLED, RunStatus.SKIPPED},
    RunStatus.WAITING: {RunStatus.QUEUED, RunStatus.CANCELLED, RunStatus.SKIPPED},
    RunStatus.RUNNING: {
        RunStatus.SUCCEEDED,
        RunStatus.RETRYING,
        RunStatus.FAILED,
        RunStatus.TIMED_OUT,
        RunStatus.CANCELLED,
    },
    RunStatus.RETRYING: {RunStatus.QUEUED, RunStatus.CANCELLED},
    # Manual retry re-opens a finished run.
    RunStatus.FAILED: {RunStatus.QUEUED},
    RunStatus.TIMED_OUT: {RunStatus.QUEUED},
    RunStatus.CANCELLED: {RunStatus.QUEUED},
    RunStatus.SUCCEEDED: set(),
    RunStatus.SKIPPED: set(),
}


class InvalidTransition(ValueError):
    pass


def status_in(statuses: Iterable[str]) -> In:
    """The status condition of a statement that names its run by key (``echoflow.unindexed``), for ``filter()``."""
    return unindexed_in("status", statuses)


def _sources(target: str, sources: Iterable[str]) -> list[str]:
    allowed = [s for s in sources if target in ALLOWED[RunStatus(s)]]
    if not allowed:
        raise InvalidTransition(f"no run may move from {', '.join(sources)} to {target}")
    return allowed


def run_transition(
    *,
    run: Run,
    to: str,
    sources: Iterable[str],
    expected_attempts: int | None = None,
    data: dict[str, Any] | None = None,
    **fields: Any,
) -> bool:
    """Move ``run`` to ``to`` if it is still in one of ``sources`` (and at ``expected_attempts``, when given)."""
    query = Run.objects.filter(status_in(_sources(to, sources)), pk=run.pk)
    if expected_attempts is not None:
        query = query.filter(attempts=expected_attempts)
    if query.update(status=to, **fields) == 0:
        return False
    run.status = to
    for name, value in fields.items():
        if not hasattr(value, "resolve_expression"):
            setattr(run, name, value)
    event_record(
        EventSpec(
            type=EVENT_FOR_STATUS[RunStatus(to)],
            organization_id=run.organization_id,
            schedule_id=run.schedule_id,
            run_id=run.pk,
            attempt=fields.get("attempts", run.attempts) if isinstance(fields.get("attempts", 0), int) else None,
            data={"status": to, **(data or {})},
        )
    )
    return True


def runs_transition_bulk(*, runs: list[Run], to: str, sources: Iterable[str], **fields: Any) -> list[Run]:
    """Bulk form for the dispatcher: rows must already be locked by the caller (select_for_update)."""
    allowed = _sources(to, sources)
    moving = [r for r in runs if r.status in allowed]
    if not moving:
        return []
    Run.objects.filter(pk__in=[r.pk for r in moving], status__in=allowed).update(status=to, **fields)
    events_record(
        EventSpec(
            type=EVENT_FOR_STATUS[RunStatus(to)],
            organization_id=r.organization_id,
            schedule_id=r.schedule_id,
            run_id=r.pk,
            attempt=r.attempts,
            data={"status": to},
        )
        for r in moving
    )
    for r in moving:
        r.status = to
    return moving
