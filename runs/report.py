"""An external executor reports the outcome of an ``event`` run (``POST /api/v1/runs/{id}/report/``).

An event action publishes a message for a program outside EchoFlow; that program does the work and reports back.
The report finishes the attempt and moves the run on exactly as the executor would have: succeeded, or failed
with the run's retry policy (retrying while attempts remain). It is a conditional transition from ``running``,
so a report racing a cancel, the reaper or a second report changes the run at most once; the loser gets a
RunStateError.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from echoflow.audit.services import audit_record
from runs.executor import backoff_delay, cap_output, schedule_record_outcome
from runs.models import AttemptOutcome, Run, RunAttempt, RunStatus
from runs.services import RunStateError
from runs.transitions import run_transition
from schedules.models import ActionKind

REPORT_STATUSES = (RunStatus.SUCCEEDED.value, RunStatus.FAILED.value)
ERROR_MAX_CHARS = 8000


def _validate(status: Any, error: Any) -> None:
    errors: dict[str, str] = {}
    if status not in REPORT_STATUSES:
        errors["status"] = f"{status!r} is not one of {', '.join(REPORT_STATUSES)}"
    if not isinstance(error, str):
        errors["error"] = "must be text"
    elif len(error) > ERROR_MAX_CHARS:
        errors["error"] = f"is {len(error)} characters long; the limit is {ERROR_MAX_CHARS}"
    if errors:
        raise ValidationError(errors)


@transaction.atomic
def run_report(
    *, run: Run, status: Any, output: Any = None, error: Any = "", now: datetime | None = None
) -> tuple[Run, str]:
    """Record an external executor's outcome of a running event run; returns the run and its new status."""
    _validate(status, error)
    now = now or timezone.now()
    locked = Run.objects.select_for_update(of=("self",)).get(pk=run.pk)
    if locked.action_kind != ActionKind.EVENT:
        raise RunStateError(f"run {locked.pk} runs a {locked.action_kind} action; only event runs take reports")
    if locked.status != RunStatus.RUNNING:
        raise RunStateError(f"run {locked.pk} is {locked.status}; only a running run takes a report")
    number = locked.attempts
    attempt = RunAttempt.objects.filter(run=locked, number=number).first()
    duration_ms = max(int((now - attempt.started_at).total_seconds() * 1000), 0) if attempt is not None else None
    capped = cap_output(output)
    message = error if status == RunStatus.FAILED else ""
    if status == RunStatus.SUCCEEDED:
        target, fields = RunStatus.SUCCEEDED, {"finished_at": now, "output": capped, "error": ""}
    elif number < locked.max_attempts:
        delay = backoff_delay(locked.backoff_seconds, number)
        target, fields = RunStatus.RETRYING, {"next_attempt_at": now + timedelta(seconds=delay), "error": message}
    else:
        target, fields = RunStatus.FAILED, {"finished_at": now, "output": capped, "error": message}
    moved = run_transition(
        run=locked,
        to=target,
        sources=[RunStatus.RUNNING],
        expected_attempts=number,
        data={"reported": True, **({"error": message[:500]} if message else {})},
        **fields,
    )
    if not moved:  # pragma: no cover - the row is locked, so only a bug elsewhere gets here
        raise RunStateError(f"run {locked.pk} changed while the report was recorded")
    RunAttempt.objects.filter(run=locked, number=number, outcome=AttemptOutcome.RUNNING).update(
        finished_at=now,
        outcome=AttemptOutcome.SUCCEEDED if status == RunStatus.SUCCEEDED else AttemptOutcome.FAILED,
        error=message,
        output=capped,
        duration_ms=duration_ms,
    )
    if locked.schedule_id and target != RunStatus.RETRYING:
        schedule_record_outcome(schedule_id=locked.schedule_id, status=target, finished_at=now)
    audit_record(
        action="run.report",
        target=locked,
        organization_id=locked.organization_id,
        changes={"status": status, "attempt": number, **({"error": message[:500]} if message else {})},
    )
    return locked, target
