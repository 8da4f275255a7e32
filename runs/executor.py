"""The executor: runs one attempt of one run. Called by the ``execute_run`` Celery task.

The claim is a conditional update (``queued → running``) so a duplicate or redelivered message does nothing.
The action runs in a helper thread (a reused one: runs.action_threads) while this thread waits with the attempt's
deadline, writes heartbeats, and notices cancellation; the outcome is written with a conditional update too, so a
cancel or the reaper that got there first wins.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, OperationalError, connections, transaction
from django.db.models import F
from django.utils import timezone

from runs import attempt_writes
from runs.action_threads import action_start
from runs.actions import ActionCancelled, ActionContext, ActionError, AwaitingReport, RetryableError, action_execute
from runs.limits import admission_check, lock_not_available, overlap_cancel
from runs.models import AttemptOutcome, Run, RunAttempt, RunStatus
from runs.transitions import run_transition, status_in
from schedules.models import Schedule, ScheduleState

logger = logging.getLogger(__name__)

# How often a running attempt heartbeats and notices that its run was cancelled.
HEARTBEAT_SECONDS = 2.0
# How long an action gets to stop by itself after its cancellation flag is set (cancel, timeout); one that is still
# running then is stuck, and its pool process is ended (see runs.tasks).
STOP_GRACE_SECONDS = 5.0
AWAITING_REPORT = "awaiting_report"


@dataclass
class AttemptResult:
    outcome: str
    output: Any = None
    error: str = ""
    retryable: bool = True
    retry_after: float | None = None
    stuck: bool = False  # the action ignored its cancellation flag and is still running


def backoff_delay(backoff: list[int], failed_attempt: int) -> int:
    """Wait before the next attempt, after attempt number ``failed_attempt`` (1-based) failed."""
    steps = backoff or [30]
    return int(steps[min(failed_attempt - 1, len(steps) - 1)])


def retry_budget_left(run: Run, number: int) -> bool:
    """Whether attempt ``number`` failing leaves room for another. Interrupted attempts (the worker shut down,
    not the action's fault) do not use up the budget."""
    if number < run.max_attempts:
        return True
    interrupted = RunAttempt.objects.filter(run_id=run.pk, outcome=AttemptOutcome.INTERRUPTED).count()
    return number - interrupted < run.max_attempts


def cap_output(value: Any) -> Any:
    limit = settings.ECHOFLOW["OUTPUT_MAX_CHARS"]
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        return {"repr": repr(value)[:limit], "note": "output was not JSON"}
    if len(text) <= limit:
        return value
    return {"truncated": text[:limit], "note": f"output capped at {limit} characters"}


# A cancel_other claim holds the schedule's row and locks the running runs it cancels; a finish of one of them
# holds that run's row and then updates the schedule's. So the claim locks those runs NOWAIT and, when one is busy
# (its finish, a heartbeat or a cancel is writing it), lets go of everything, pauses and starts over: by then the
# other transaction has committed, and a finished run needs no cancelling. The last try waits for the lock.
LOCK_BUSY_TRIES = 50
LOCK_BUSY_PAUSE_SECONDS = 0.02


def _lock_busy_pause(tries: int) -> None:
    time.sleep(LOCK_BUSY_PAUSE_SECONDS * min(tries, 5))


# What the fast path's claim returned for a run (attempt_writes.run_claim): the run as it was, whether it started.
FastClaim = tuple[attempt_writes.LockedRun | None, bool]
# A claimed run, the number of its attempt and its organization's signing secret.
Claimed = tuple[Run, int, str]


@dataclass
class Handover:
    """The next run of a batch, taken by the finish of the run before it to be claimed in the same statement
    (attempt_writes.run_succeed_then_claim): its id, the claim's time and what it returned (None: not claimed
    there, the claim is to be made apart)."""

    run_id: int
    now: datetime
    fast: FastClaim | None


def _claim(run_id: int, worker: str, now: datetime, fast: FastClaim | None = None) -> Claimed | None:
    """Move a queued run to running if its limits admit it; returns the run, the attempt's number and the
    organization's signing secret. Runs over a limit wait or are skipped (the overlap policy decides).
    ``fast``: the fast path's claim of the run, when it was already made (a Handover)."""
    for tries in range(1, LOCK_BUSY_TRIES):
        try:
            return _claim_once(run_id, worker, now, nowait=True, fast=fast)
        except OperationalError as exc:
            if not lock_not_available(exc):
                raise
            fast = None  # each further try claims afresh, as when the claim was made apart
            _lock_busy_pause(tries)
    return _claim_once(run_id, worker, now, nowait=False, fast=fast)


def _claim_once(
    run_id: int, worker: str, now: datetime, *, nowait: bool, fast: FastClaim | None = None
) -> Claimed | None:
    schedule_id: int | None = None
    if fast is None and attempt_writes.available():
        # The common case, in one round trip that commits by itself (runs.attempt_writes).
        fast = attempt_writes.run_claim(run_id, worker=worker, now=now, occurred_at=timezone.now())
    if fast is not None:
        locked, started = fast
        if locked is not None and started:
            return locked.run, locked.run.attempts, locked.signing_secret
        if locked is None or locked.run.status != RunStatus.QUEUED:
            return None
        schedule_id = locked.run.schedule_id
    # A decision to make (or SQLite): the portable path, which locks the run again and reads it afresh.
    with transaction.atomic():
        if schedule_id is not None:
            # The claim's lock order (schedule, run, organization), so that it cannot deadlock with a claim of
            # the same run (a duplicate message) on the fast path.
            Schedule.objects.select_for_update(no_key=True).filter(pk=schedule_id).values_list("pk").first()
        run_or_none = (
            Run.objects.select_for_update(of=("self",)).select_related("organization").filter(pk=run_id).first()
        )
        if run_or_none is None:
            return None
        run, secret = run_or_none, run_or_none.organization.signing_secret
        if run.status != RunStatus.QUEUED:
            return None
        admission = admission_check(run=run, nowait=nowait)
        if admission.decision == "skip":
            run_transition(
                run=run,
                to=RunStatus.SKIPPED,
                sources=[RunStatus.QUEUED],
                finished_at=now,
                status_reason=admission.reason[:500],
                data={"reason": admission.reason},
            )
            if run.schedule_id:
                Schedule.objects.filter(pk=run.schedule_id).update(skipped_count=F("skipped_count") + 1)
            return None
        if admission.decision == "wait":
            run_transition(
                run=run,
                to=RunStatus.WAITING,
                sources=[RunStatus.QUEUED],
                status_reason=admission.reason[:500],
                waiting_for=admission.waiting_for,
                data={"reason": admission.reason},
            )
            return None
        overlap_cancel(runs=admission.cancel, reason=admission.reason, now=now)
        number = run.attempts + 1
        claimed = run_transition(
            run=run,
            to=RunStatus.RUNNING,
            sources=[RunStatus.QUEUED],
            expected_attempts=run.attempts,
            data=_start_data(run, worker, now),
            **{"attempts": number, "worker": worker, "heartbeat_at": now, "next_attempt_at": None, "report_by": None},
            **({"started_at": now} if run.started_at is None else {}),
        )
        if not claimed:
            return None
        RunAttempt.objects.create(run=run, number=number, started_at=now, worker=worker)
        return run, number, secret


def _start_data(run: Run, worker: str, now: datetime) -> dict[str, Any]:
    """The ``run.started`` event's data (besides its status)."""
    return {
        "worker": worker,
        "slot": run.slot.isoformat() if run.slot else None,
        # Trigger lag: how late the start is against the planned slot (or due time for manual runs).
        "lag_ms": int(((now - (run.slot or run.due_at)).total_seconds()) * 1000),
        "trigger": run.trigger,
    }


# Called once if the action is still running at a monotonic time: (when, what).
SlowHook = tuple[float, Callable[[], None]]


def _run_action(run: Run, ctx: ActionContext, on_slow: SlowHook | None = None) -> AttemptResult:
    box: dict[str, AttemptResult] = {}

    def target() -> None:
        try:
            output = action_execute(kind=run.action_kind, name=run.action_name, ctx=ctx)
            if isinstance(output, AwaitingReport):
                box["result"] = AttemptResult(
                    AWAITING_REPORT, output={"event_id": output.event_id, "type": output.type}
                )
            else:
                box["result"] = AttemptResult(AttemptOutcome.SUCCEEDED, output=cap_output(output))
        except ActionCancelled as exc:
            box["result"] = AttemptResult(AttemptOutcome.CANCELLED, error=str(exc), retryable=False)
        except RetryableError as exc:
            box["result"] = AttemptResult(AttemptOutcome.FAILED, error=str(exc), retry_after=exc.retry_after)
        except ActionError as exc:
            box["result"] = AttemptResult(AttemptOutcome.FAILED, error=str(exc), retryable=exc.retryable)
        except Exception as exc:
            tb = traceback.format_exc(limit=8)
            box["result"] = AttemptResult(AttemptOutcome.FAILED, error=f"{type(exc).__name__}: {exc}\n{tb}")
        finally:
            connections.close_all()

    job = action_start(target, name=f"echoflow-run-{run.pk}")
    while True:
        wait = min(HEARTBEAT_SECONDS, max(ctx.remaining, 0.01))
        if on_slow is not None:
            wait = min(wait, max(on_slow[0] - time.monotonic(), 0.0))
        if job.wait(wait):
            return box.get("result") or AttemptResult(AttemptOutcome.FAILED, error="the action ended without a result")
        if on_slow is not None and time.monotonic() >= on_slow[0]:
            _, slow = on_slow
            on_slow = None
            slow()
            continue
        if ctx.remaining <= 0:
            ctx.cancel_event.set()
            job.wait(STOP_GRACE_SECONDS)
            return AttemptResult(
                AttemptOutcome.TIMED_OUT,
                error=f"the attempt exceeded its timeout of {run.timeout_seconds} s",
                stuck=job.running,
            )
        # Heartbeat; if the run is no longer ours (cancelled, reaped), tell the action to stop.
        alive = Run.objects.filter(status_in([RunStatus.RUNNING]), pk=run.pk, attempts=ctx.attempt).update(
            heartbeat_at=timezone.now()
        )
        if not alive:
            ctx.cancel_event.set()
            job.wait(STOP_GRACE_SECONDS)
            # Cancelled, reaped or interrupted by a shutdown: whoever moved the run closed the attempt; the
            # conditional updates in _finish change nothing.
            return AttemptResult(
                AttemptOutcome.CANCELLED,
                error="the run was cancelled while running",
                retryable=False,
                stuck=job.running,
            )


# Called by _finish when it can claim the next run in the same round trip: that run's id, or None (no next run).
TakeNext = Callable[[], int | None]


def _finish(
    run: Run, number: int, result: AttemptResult, started: float, worker: str, take_next: TakeNext | None = None
) -> tuple[str | None, Handover | None]:
    """Record the attempt's outcome; returns the run's new status (None if it was no longer ours) and, when
    ``take_next`` gave a run to claim with the finish, that run's Handover."""
    now = timezone.now()
    duration_ms = int((time.monotonic() - started) * 1000)
    if result.outcome == AttemptOutcome.SUCCEEDED and attempt_writes.available():
        handover: Handover | None = None
        next_run_id = take_next() if take_next is not None else None
        if next_run_id is not None:
            # The finish and the next run's claim: one statement, one transaction (runs.attempt_writes). The next
            # run's times follow this run's, as they would with the two made apart.
            occurred_at = timezone.now()
            handover = Handover(next_run_id, timezone.now(), None)
            try:
                moved, handover.fast = attempt_writes.run_succeed_then_claim(
                    run,
                    number=number,
                    output=result.output,
                    duration_ms=duration_ms,
                    now=now,
                    occurred_at=occurred_at,
                    next_run_id=next_run_id,
                    worker=worker,
                    next_now=handover.now,
                    next_occurred_at=handover.now,
                )
                return (RunStatus.SUCCEEDED if moved else None), handover
            except DatabaseError:
                if connections["default"].in_atomic_block:
                    raise
                # Nothing of it was written. The outcome must not depend on the next run's claim: it is recorded
                # on its own, and the next run is claimed on its own (where the error, if it lasts, is raised).
                logger.exception("execute: run %s: its finish with the next run's claim failed; apart now", run.pk)
        # One statement, its own transaction (runs.attempt_writes).
        moved = attempt_writes.run_succeed(
            run, number=number, output=result.output, duration_ms=duration_ms, now=now, occurred_at=timezone.now()
        )
        return (RunStatus.SUCCEEDED if moved else None), handover
    return _finish_orm(run, number, result, now, duration_ms), None


def _finish_orm(run: Run, number: int, result: AttemptResult, now: datetime, duration_ms: int) -> str | None:
    with transaction.atomic():
        if result.outcome == AWAITING_REPORT:
            # The event is out; the external executor reports the outcome. The attempt stays open until then,
            # for at most the rest of its timeout (the reaper enforces it).
            RunAttempt.objects.filter(run=run, number=number, outcome=AttemptOutcome.RUNNING).update(
                output=result.output
            )
            elapsed = timedelta(milliseconds=duration_ms)
            Run.objects.filter(status_in([RunStatus.RUNNING]), pk=run.pk, attempts=number).update(
                report_by=now + max(timedelta(seconds=run.timeout_seconds) - elapsed, timedelta(0))
            )
            return RunStatus.RUNNING
        RunAttempt.objects.filter(run=run, number=number, outcome=AttemptOutcome.RUNNING).update(
            finished_at=now,
            outcome=result.outcome,
            error=result.error[:8000],
            output=result.output,
            duration_ms=duration_ms,
        )
        if result.outcome == AttemptOutcome.CANCELLED:
            # Whoever cancelled the run already moved it; a running run stopped by its own flag is cancelled here.
            run_transition(
                run=run,
                to=RunStatus.CANCELLED,
                sources=[RunStatus.RUNNING],
                expected_attempts=number,
                finished_at=now,
                error=result.error[:8000],
            )
            return RunStatus.CANCELLED
        if result.outcome == AttemptOutcome.SUCCEEDED:
            target, fields = RunStatus.SUCCEEDED, {"finished_at": now, "output": result.output, "error": ""}
        elif result.retryable and retry_budget_left(run, number):
            delay = backoff_delay(run.backoff_seconds, number)
            if result.retry_after is not None:
                delay = max(delay, int(result.retry_after))
            target = RunStatus.RETRYING
            fields = {"next_attempt_at": now + timedelta(seconds=delay), "error": result.error[:8000]}
        else:
            target = RunStatus.TIMED_OUT if result.outcome == AttemptOutcome.TIMED_OUT else RunStatus.FAILED
            fields = {"finished_at": now, "error": result.error[:8000]}
        moved = run_transition(
            run=run,
            to=target,
            sources=[RunStatus.RUNNING],
            expected_attempts=number,
            data={"duration_ms": duration_ms, **({"error": result.error[:500]} if result.error else {})},
            **fields,
        )
        if not moved:
            return None
        if run.schedule_id and target != RunStatus.RETRYING:
            schedule_record_outcome(schedule_id=run.schedule_id, status=target, finished_at=now)
        return target


def schedule_record_outcome(*, schedule_id: int, status: str, finished_at: datetime) -> None:
    """Last status and the consecutive-failure count; pauses the schedule at its pause_after_failures."""
    failed = status in {RunStatus.FAILED, RunStatus.TIMED_OUT}
    Schedule.objects.filter(pk=schedule_id).update(
        last_run_at=finished_at,
        last_run_status=status,
        consecutive_failures=(F("consecutive_failures") + 1) if failed else 0,
    )
    if failed:
        schedule = (
            Schedule.objects.filter(pk=schedule_id)
            .only("pause_after_failures", "consecutive_failures", "state")
            .first()
        )
        if (
            schedule is not None
            and schedule.pause_after_failures
            and schedule.consecutive_failures >= schedule.pause_after_failures
        ):
            Schedule.objects.filter(pk=schedule_id, state=ScheduleState.ACTIVE).update(
                state=ScheduleState.PAUSED,
                state_note=f"paused after {schedule.consecutive_failures} consecutive failed runs",
            )


def run_execute(
    *, run_id: int, worker: str, on_stuck: Callable[[], None] | None = None, on_slow: SlowHook | None = None
) -> str | None:
    """Execute one attempt of ``run_id``; returns the run's new status, or None if it was not ours to run.

    ``on_stuck`` is called, after the outcome is recorded, when the action ignored its cancellation flag (cancel
    or timeout) and is still running in its thread: the Celery task ends its pool process then. ``on_slow``
    (monotonic time, callable): called once if the action is still running then (run_execute_batch)."""
    now = timezone.now()
    status, _ = _execute(run_id, worker, _claim(run_id, worker, now), on_stuck=on_stuck, on_slow=on_slow)
    return status


def _execute(
    run_id: int,
    worker: str,
    claimed: Claimed | None,
    *,
    on_stuck: Callable[[], None] | None,
    on_slow: SlowHook | None,
    take_next: TakeNext | None = None,
) -> tuple[str | None, Handover | None]:
    """``run_execute`` once the run is claimed (or was not); ``take_next`` as for ``_finish``."""
    if claimed is None:
        logger.info("execute: run %s is not queued; nothing to do (duplicate or cancelled)", run_id)
        return None, None
    run, number, signing_secret = claimed
    ctx = ActionContext(
        run_id=run.pk,
        organization_id=run.organization_id,
        schedule_id=run.schedule_id,
        attempt=number,
        payload=run.payload,
        config=run.action_config or {},
        trace_id=run.trace_id,
        deadline=time.monotonic() + run.timeout_seconds,
        signing_secret=signing_secret,
    )
    started = time.monotonic()
    result = _run_action(run, ctx, on_slow)
    status, handover = _finish(run, number, result, started, worker, take_next)
    logger.info(
        "run=%s schedule=%s org=%s trace=%s attempt=%s outcome=%s status=%s",
        run.pk,
        run.schedule_id,
        run.organization_id,
        run.trace_id,
        number,
        result.outcome,
        status,
    )
    if result.stuck:
        logger.warning(
            "run=%s attempt=%s: the action ignored its cancellation flag for %g s and is still running",
            run.pk,
            number,
            STOP_GRACE_SECONDS,
        )
        if on_stuck is not None:
            on_stuck()
    return status, handover


def run_execute_batch(
    *,
    run_ids: list[int],
    worker: str,
    give_back: Callable[[list[int]], None],
    on_stuck: Callable[[], None] | None = None,
) -> list[str | None]:
    """Execute the runs of one ``execute_runs`` message in turn, each exactly as ``run_execute`` does (its own
    claim, attempt and finish), so a duplicate message, a redelivery or a run cancelled meanwhile changes nothing.
    On PostgreSQL, when a run succeeds, its finish and the next run's claim are one statement and one transaction
    (``attempt_writes.run_succeed_then_claim``).

    A batch must not hold runs back behind a slow one: once it has been going for RUN_BATCH_SPILL_SECONDS (checked
    before each run and while an action runs), the runs it has not started are handed to ``give_back`` (sent
    again, to the head of their queue) and the batch ends after the run in hand. If they cannot be sent, the
    batch keeps them and runs them itself. Returns the statuses of the runs it executed, in order."""
    deadline = time.monotonic() + float(settings.ECHOFLOW["RUN_BATCH_SPILL_SECONDS"])
    rest = list(run_ids)
    statuses: list[str | None] = []
    keep = False  # given back, or could not be: the batch runs what it still holds without asking again

    def spill() -> None:
        nonlocal keep
        if keep or not rest:
            return
        keep = True
        try:
            give_back(list(rest))
        except Exception:
            logger.exception("execute: could not give back %d run(s) of a slow batch; running them here", len(rest))
            return
        logger.info("execute: a slow batch gave back %d run(s) for other worker processes", len(rest))
        rest.clear()

    def stuck() -> None:
        spill()  # before this pool process is ended
        if on_stuck is not None:
            on_stuck()

    def take_next() -> int | None:
        # The next run, claimed with this run's finish; the same check as before a run the batch starts itself.
        if rest and time.monotonic() >= deadline:
            spill()
        return rest.pop(0) if rest else None

    handover: Handover | None = None
    while rest or handover is not None:
        if handover is not None:
            run_id, claimed = handover.run_id, _claim(handover.run_id, worker, handover.now, handover.fast)
        else:
            if statuses and time.monotonic() >= deadline:  # the first run always starts here
                spill()
                if not rest:
                    break
            run_id = rest.pop(0)
            claimed = _claim(run_id, worker, timezone.now())
        status, handover = _execute(
            run_id,
            worker,
            claimed,
            on_stuck=stuck,
            on_slow=None if keep else (deadline, spill),
            take_next=take_next,
        )
        statuses.append(status)
    return statuses
