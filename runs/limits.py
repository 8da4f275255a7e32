"""Admission of a queued run: the schedule's overlap policy and the organization's concurrency limit.

Called by the executor inside the claim transaction, with the schedule and organization rows locked, so two
workers claiming runs of the same schedule (or org) at once see each other's result: the limit can never be
exceeded by a race. Runs over a limit wait (or are skipped, per the overlap policy); the dispatcher releases
waiting runs when capacity frees (``waiting_release``), in priority order, then slot order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction
from django.db.models import Count, Q

from echoflow.accounts.models import Organization
from runs.models import Run, RunStatus
from runs.transitions import run_transition, runs_transition_bulk
from schedules.models import OverlapPolicy, Schedule

WAIT_SCHEDULE = "schedule"
WAIT_ORGANIZATION = "organization"


@dataclass
class Admission:
    decision: str  # "run", "wait" or "skip"
    reason: str = ""
    cancel: list[Run] = field(default_factory=list)
    waiting_for: str = ""


def _running(**filters: object) -> int:
    return Run.objects.filter(status=RunStatus.RUNNING, **filters).count()


def _waiting_ahead(run: Run, *, statuses: tuple[str, ...] = (RunStatus.WAITING,), **filters: object) -> bool:
    """Is a run waiting that should start before ``run`` (higher priority, or same priority and older)?"""
    return (
        Run.objects.filter(status__in=statuses, **filters)
        .filter(Q(priority__gt=run.priority) | Q(priority=run.priority, id__lt=run.pk))
        .exists()
    )


def lock_not_available(exc: BaseException) -> bool:
    """Whether a database error is PostgreSQL's "could not obtain lock" (55P03), as a NOWAIT lock raises it."""
    cause = exc.__cause__
    return "55P03" in (getattr(cause, "sqlstate", None), getattr(cause, "pgcode", None))


def admission_check(*, run: Run, nowait: bool = False) -> Admission:
    """Decide whether ``run`` may start now. The caller holds a transaction; this locks schedule and org rows.

    FOR NO KEY UPDATE: it serializes admissions without colliding with the key-share locks that inserting runs
    (foreign keys to the schedule and org) takes, so the dispatcher's inserts never wait for a claim.

    ``nowait``: under cancel_other, the running runs to cancel are locked NOWAIT (a busy one raises an error that
    ``lock_not_available`` recognizes) instead of waited for while this holds the schedule's row: their finish holds
    the run's row and then updates the schedule's, and the two waiting for each other would deadlock."""
    if run.schedule_id is not None:
        schedule = (
            Schedule.objects.select_for_update(no_key=True)
            .only("id", "max_concurrency", "overlap_policy")
            .filter(pk=run.schedule_id)
            .first()
        )
        if schedule is not None and schedule.overlap_policy != OverlapPolicy.ALLOW_ALL:
            running = _running(schedule_id=schedule.pk)
            buffered = schedule.overlap_policy in {OverlapPolicy.BUFFER_ONE, OverlapPolicy.BUFFER_ALL}
            # Buffered runs start in slot order: an older run of the schedule still queued (its message on the way
            # to another worker) is ahead too, or two workers claiming at once could start them out of order.
            ahead = buffered and _waiting_ahead(
                run, statuses=(RunStatus.WAITING, RunStatus.QUEUED), schedule_id=schedule.pk
            )
            if running >= schedule.max_concurrency or ahead:
                policy = schedule.overlap_policy
                reason = (
                    f"{running} run(s) of this schedule already running (max_concurrency {schedule.max_concurrency})"
                )
                if policy == OverlapPolicy.SKIP:
                    return Admission("skip", f"overlap policy skip: {reason}")
                if policy == OverlapPolicy.BUFFER_ONE:
                    others = Run.objects.filter(schedule_id=schedule.pk, status=RunStatus.WAITING).exclude(pk=run.pk)
                    if others.exists():
                        return Admission("skip", f"overlap policy buffer_one: one run already waits; {reason}")
                    return Admission("wait", f"overlap policy buffer_one: {reason}", waiting_for=WAIT_SCHEDULE)
                if policy == OverlapPolicy.BUFFER_ALL:
                    return Admission("wait", f"overlap policy buffer_all: {reason}", waiting_for=WAIT_SCHEDULE)
                if policy == OverlapPolicy.CANCEL_OTHER:
                    excess = running - schedule.max_concurrency + 1
                    oldest = list(
                        Run.objects.select_for_update(nowait=nowait)
                        .filter(schedule_id=schedule.pk, status=RunStatus.RUNNING)
                        .order_by("started_at", "id")[:excess]
                    )
                    return Admission("run", f"overlap policy cancel_other: {reason}", cancel=oldest)
    org = (
        Organization.objects.select_for_update(no_key=True)
        .only("id", "max_concurrent_runs")
        .get(pk=run.organization_id)
    )
    running = _running(organization_id=org.pk)
    if running >= org.max_concurrent_runs or _waiting_ahead(run, organization_id=org.pk, waiting_for=WAIT_ORGANIZATION):
        return Admission(
            "wait",
            f"organization limit: {running} of {org.max_concurrent_runs} runs running, or others wait ahead",
            waiting_for=WAIT_ORGANIZATION,
        )
    return Admission("run")


def waiting_release(*, limit: int = 500) -> int:
    """Move waiting runs back to queued where capacity opened, highest priority first, then oldest slot.

    Released runs are claimed again by a worker, which re-checks every limit; releasing one too many only makes
    it wait again, never run over a limit.
    """
    with transaction.atomic():
        waiting = list(
            Run.objects.select_for_update(skip_locked=True)
            .filter(status=RunStatus.WAITING)
            .order_by("-priority", "id")
            .only("id", "status", "organization_id", "schedule_id", "attempts", "priority")[:limit]
        )
        if not waiting:
            return 0
        schedule_ids = {r.schedule_id for r in waiting if r.schedule_id}
        org_ids = {r.organization_id for r in waiting}
        # Only running runs hold capacity: counting queued ones too would let a queued run whose message is
        # still on its way (or lost) hold back the whole line. Claims re-check every limit under row locks, so
        # releasing one too many only makes it wait again.
        running_by_schedule = dict(
            Run.objects.filter(status=RunStatus.RUNNING, schedule_id__in=schedule_ids)
            .values_list("schedule_id")
            .annotate(n=Count("id"))
            .values_list("schedule_id", "n")
        )
        running_by_org = dict(
            Run.objects.filter(status=RunStatus.RUNNING, organization_id__in=org_ids)
            .values_list("organization_id")
            .annotate(n=Count("id"))
            .values_list("organization_id", "n")
        )
        limits = {
            s.pk: (s.max_concurrency, s.overlap_policy)
            for s in Schedule.objects.filter(pk__in=schedule_ids).only("id", "max_concurrency", "overlap_policy")
        }
        org_limits = dict(Organization.objects.filter(pk__in=org_ids).values_list("id", "max_concurrent_runs"))
        release: list[Run] = []
        for run in waiting:
            if running_by_org.get(run.organization_id, 0) >= org_limits[run.organization_id]:
                continue
            if run.schedule_id in limits:
                max_concurrency, policy = limits[run.schedule_id]
                if policy != OverlapPolicy.ALLOW_ALL and running_by_schedule.get(run.schedule_id, 0) >= max_concurrency:
                    continue
                running_by_schedule[run.schedule_id] = running_by_schedule.get(run.schedule_id, 0) + 1
            running_by_org[run.organization_id] = running_by_org.get(run.organization_id, 0) + 1
            release.append(run)
        moved = runs_transition_bulk(
            runs=release,
            to=RunStatus.QUEUED,
            sources=[RunStatus.WAITING],
            enqueued_at=None,
            resend_at=None,
            sends=0,
            waiting_for="",
        )
        return len(moved)


def overlap_cancel(*, runs: list[Run], reason: str, now: datetime) -> None:
    """cancel_other: the oldest running runs are cancelled; their executors stop at their next heartbeat."""
    for other in runs:
        run_transition(
            run=other,
            to=RunStatus.CANCELLED,
            sources=[RunStatus.RUNNING],
            finished_at=now,
            status_reason=reason[:500],
        )
