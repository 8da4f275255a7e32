"""Writes about runs: run-now, ad-hoc runs, manual retry, cancel, and the reaper of lost attempts."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from echoflow.accounts.models import Organization
from echoflow.audit.services import audit_record
from echoflow.events.bus import EventSpec, event_record
from runs.actions import action_validate
from runs.executor import backoff_delay, retry_budget_left, schedule_record_outcome
from runs.models import FINAL_STATUSES, AttemptOutcome, Run, RunAttempt, RunStatus, RunTrigger
from runs.run_writes import run_from_schedule
from runs.transitions import run_transition
from schedules.models import DEFAULT_BACKOFF, Schedule


class RunStateError(ValueError):
    """The run is not in a state that allows the requested operation."""


def _insert_run(run: Run) -> tuple[Run, bool]:
    """Save a new run; if its idempotency key exists, return the existing one (created=False)."""
    try:
        with transaction.atomic():
            run.save()
    except IntegrityError:
        existing = Run.objects.filter(idempotency_key=run.idempotency_key).first()
        if existing is None:
            raise
        return existing, False
    event_record(
        EventSpec(
            type="run.queued",
            organization_id=run.organization_id,
            schedule_id=run.schedule_id,
            run_id=run.pk,
            attempt=0,
            data={"status": RunStatus.QUEUED, "trigger": run.trigger},
        )
    )
    return run, True


@transaction.atomic
def schedule_run_now(
    *,
    schedule: Schedule,
    idempotency_key: str | None = None,
    now: datetime | None = None,
    trigger: str = RunTrigger.MANUAL,
) -> tuple[Run, bool]:
    """Queue a run of the schedule immediately, outside its slots; the same key returns the same run."""
    now = now or timezone.now()
    key = f"o{schedule.organization_id}:manual:{idempotency_key}" if idempotency_key else f"manual:{uuid.uuid4().hex}"
    run = run_from_schedule(
        schedule, slot=None, due_at=now, trigger=trigger, now=now, round_index=None, idempotency_key=key
    )
    run, created = _insert_run(run)
    if created:
        audit_record(
            action="schedule.run_now",
            target=schedule,
            organization_id=schedule.organization_id,
            changes={"run": run.pk, "idempotency_key": idempotency_key or ""},
        )
    return run, created


@transaction.atomic
def run_create_adhoc(
    *,
    organization: Organization,
    action_kind: str,
    action_name: str = "",
    action_config: Mapping[str, Any] | None = None,
    payload: Any = None,
    max_attempts: int = 1,
    timeout_seconds: int = 300,
    priority: int = 5,
    idempotency_key: str | None = None,
    trigger: str = RunTrigger.API,
    now: datetime | None = None,
) -> tuple[Run, bool]:
    """A run with no schedule: "do this once, now"."""
    if action_config is not None and not isinstance(action_config, Mapping):
        raise ValidationError({"action_config": "must be a JSON object"})
    config = dict(action_config or {})
    action_validate(kind=action_kind, name=action_name, config=config, payload=payload)
    errors = {}
    if not 1 <= max_attempts <= 100:
        errors["max_attempts"] = "must be between 1 and 100"
    if not 1 <= timeout_seconds <= 7 * 86400:
        errors["timeout_seconds"] = "must be between 1 and 604800"
    if not 0 <= priority <= 9:
        errors["priority"] = "must be between 0 and 9"
    if errors:
        raise ValidationError(errors)
    now = now or timezone.now()
    key = f"o{organization.pk}:adhoc:{idempotency_key}" if idempotency_key else f"adhoc:{uuid.uuid4().hex}"
    run = Run(
        organization=organization,
        schedule=None,
        idempotency_key=key,
        trigger=trigger,
        due_at=now,
        max_attempts=max_attempts,
        backoff_seconds=list(DEFAULT_BACKOFF),
        timeout_seconds=timeout_seconds,
        priority=priority,
        action_kind=action_kind,
        action_name=action_name,
        action_config=config,
        payload=payload if payload is not None else {},
        trace_id=Run.new_trace_id(),
    )
    run, created = _insert_run(run)
    if created:
        audit_record(
            action="run.create",
            target=run,
            organization_id=organization.pk,
            changes={"action_kind": action_kind, "action_name": action_name},
        )
    return run, created


@transaction.atomic
def run_retry(*, run: Run, now: datetime | None = None) -> Run:
    """Re-open a failed, timed-out or cancelled run with a fresh attempt budget; the dispatcher sends it."""
    now = now or timezone.now()
    locked = Run.objects.select_for_update(of=("self",)).select_related("schedule").get(pk=run.pk)
    retryable = {RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELLED}
    if locked.status not in retryable:
        raise RunStateError(f"run {run.pk} is {locked.status}; only failed, timed-out or cancelled runs can be retried")
    budget = locked.schedule.max_attempts if locked.schedule else max(1, locked.max_attempts)
    run_transition(
        run=locked,
        to=RunStatus.QUEUED,
        sources=retryable,
        data={"manual_retry": True},
        max_attempts=locked.attempts + budget,
        due_at=now,
        enqueued_at=None,
        resend_at=None,
        sends=0,
        finished_at=None,
        next_attempt_at=None,
        status_reason="retried by hand",
    )
    audit_record(action="run.retry", target=locked, organization_id=locked.organization_id)
    return locked


@transaction.atomic
def run_cancel(*, run: Run, reason: str = "cancelled by hand", now: datetime | None = None) -> Run:
    """Cancel a run. Queued, waiting and retrying runs stop at once; a running one is marked cancelled and its
    executor, at its next heartbeat, stops the action and records the attempt as cancelled."""
    now = now or timezone.now()
    locked = Run.objects.select_for_update().get(pk=run.pk)
    if locked.is_final:
        raise RunStateError(f"run {run.pk} is already {locked.status}")
    run_transition(
        run=locked,
        to=RunStatus.CANCELLED,
        sources=[RunStatus.QUEUED, RunStatus.WAITING, RunStatus.RETRYING, RunStatus.RUNNING],
        finished_at=now,
        status_reason=reason[:500],
    )
    if locked.schedule_id:
        schedule_record_outcome(schedule_id=locked.schedule_id, status=RunStatus.CANCELLED, finished_at=now)
    audit_record(action="run.cancel", target=locked, organization_id=locked.organization_id, changes={"reason": reason})
    return locked


def runs_reap(*, now: datetime | None = None, limit: int = 500) -> int:
    """Runs whose worker stopped heartbeating (killed, machine gone): the attempt is lost; retry or fail."""
    now = now or timezone.now()
    stale_before = now - timedelta(seconds=settings.ECHOFLOW["HEARTBEAT_STALE_SECONDS"] * 4)
    reaped = 0
    with transaction.atomic():
        lost = list(
            Run.objects.select_for_update(skip_locked=True)
            .filter(status=RunStatus.RUNNING)
            .filter(
                Q(report_by__isnull=True, heartbeat_at__lt=stale_before) | Q(report_by__isnull=False, report_by__lt=now)
            )
            .order_by("heartbeat_at")[:limit]
        )
        for run in lost:
            awaited = run.report_by is not None
            if awaited:
                error = f"no report arrived within the timeout of {run.timeout_seconds} s"
            else:
                last = f"{run.heartbeat_at:%Y-%m-%d %H:%M:%S}Z" if run.heartbeat_at else "never"
                error = f"the worker {run.worker or '?'} stopped heartbeating (last at {last})"
            RunAttempt.objects.filter(run=run, number=run.attempts, outcome=AttemptOutcome.RUNNING).update(
                outcome=AttemptOutcome.TIMED_OUT if awaited else AttemptOutcome.LOST, finished_at=now, error=error
            )
            if retry_budget_left(run, run.attempts):
                run_transition(
                    run=run,
                    to=RunStatus.RETRYING,
                    sources=[RunStatus.RUNNING],
                    expected_attempts=run.attempts,
                    next_attempt_at=now + timedelta(seconds=backoff_delay(run.backoff_seconds, run.attempts)),
                    error=error,
                )
            else:
                final = RunStatus.TIMED_OUT if awaited else RunStatus.FAILED
                run_transition(
                    run=run,
                    to=final,
                    sources=[RunStatus.RUNNING],
                    expected_attempts=run.attempts,
                    finished_at=now,
                    error=error,
                )
                if run.schedule_id:
                    schedule_record_outcome(schedule_id=run.schedule_id, status=final, finished_at=now)
            reaped += 1
        # A run cancelled while running is final at once; its executor closes the attempt at the next heartbeat.
        # If that worker died first, nobody will: close such orphaned attempts here.
        orphans = RunAttempt.objects.filter(
            outcome=AttemptOutcome.RUNNING, run__status__in=FINAL_STATUSES, run__heartbeat_at__lt=stale_before
        )
        reaped += orphans.filter(run__status=RunStatus.CANCELLED).update(
            outcome=AttemptOutcome.CANCELLED, finished_at=now, error="the run was cancelled; its worker stopped first"
        )
        reaped += orphans.update(
            outcome=AttemptOutcome.LOST, finished_at=now, error="the worker stopped before recording this attempt's end"
        )
    return reaped


def runs_interrupt(*, worker: str, reason: str, now: datetime | None = None) -> int:
    """A worker is shutting down and its grace period is over: the attempts it is still running are
    ``interrupted`` and their runs retried at once (no backoff, and the retry budget is not used up).

    Runs waiting for an external report are not executing in the worker and are left alone. The worker's own
    executor notices at its next heartbeat that the run moved and stops; its conditional updates change nothing.
    """
    now = now or timezone.now()
    error = f"the worker {worker} shut down: {reason}"
    interrupted = 0
    with transaction.atomic():
        running = list(
            Run.objects.select_for_update(skip_locked=True).filter(
                status=RunStatus.RUNNING, worker=worker, report_by__isnull=True
            )
        )
        for run in running:
            closed = RunAttempt.objects.filter(run=run, number=run.attempts, outcome=AttemptOutcome.RUNNING).update(
                outcome=AttemptOutcome.INTERRUPTED, finished_at=now, error=error
            )
            moved = run_transition(
                run=run,
                to=RunStatus.RETRYING,
                sources=[RunStatus.RUNNING],
                expected_attempts=run.attempts,
                next_attempt_at=now,
                error=error,
                data={"reason": "interrupted", "error": error[:500]},
            )
            interrupted += int(bool(closed and moved))
    return interrupted
