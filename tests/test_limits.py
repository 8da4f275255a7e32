"""Overlap policies, the organization limit and cancellation, with PostgreSQL and a real Celery worker."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from echoflow.accounts.models import Organization
from runs.dispatcher import dispatch_tick
from runs.models import AttemptOutcome, Run, RunAttempt, RunStatus
from runs.services import run_cancel, schedule_run_now
from schedules.models import Schedule
from schedules.services import schedule_create
from tests.conftest import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]


def _schedule(org: Organization, name: str, *, seconds: float, policy: str = "skip", **extra: object) -> Schedule:
    return schedule_create(
        organization=org,
        data={
            "name": name,
            "trigger_kind": "cron",
            "cron": "0 0 1 1 *",
            "action_name": "echoflow.sleep",
            "payload": {"seconds": seconds},
            "overlap_policy": policy,
            "max_concurrency": 1,
            "max_attempts": 1,
            **extra,
        },
    )


def _statuses(runs: list[Run]) -> list[str]:
    by_id = dict(Run.objects.filter(pk__in=[r.pk for r in runs]).values_list("pk", "status"))
    return [by_id[r.pk] for r in runs]


def _pump(until: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Tick the dispatcher (it releases waiting runs) until ``until`` holds."""

    def tick_and_check() -> bool:
        dispatch_tick()
        return until()

    wait_until(tick_and_check, timeout=timeout, what=what)


def _queue(schedule: Schedule, n: int) -> list[Run]:
    runs = [schedule_run_now(schedule=schedule)[0] for _ in range(n)]
    return runs


def test_skip_records_the_new_run_as_skipped_and_cancel_stops_the_running_one(
    org: Organization, celery_worker_thread: object
) -> None:
    schedule = _schedule(org, "skip", seconds=30)
    first = _queue(schedule, 1)[0]
    dispatch_tick()
    wait_until(lambda: _statuses([first]) == ["running"], what="the first run to start")
    second = _queue(schedule, 1)[0]
    dispatch_tick()
    wait_until(lambda: _statuses([second]) == ["skipped"], what="the overlapping run to be skipped")
    second.refresh_from_db()
    assert "overlap policy skip" in second.status_reason
    schedule.refresh_from_db()
    assert schedule.skipped_count == 1

    run_cancel(run=first)
    wait_until(
        lambda: RunAttempt.objects.filter(run=first, outcome=AttemptOutcome.CANCELLED).exists(),
        timeout=15,
        what="the running attempt to stop and be recorded cancelled",
    )
    first.refresh_from_db()
    assert first.status == RunStatus.CANCELLED
    attempt = RunAttempt.objects.get(run=first)
    assert attempt.duration_ms is not None and attempt.duration_ms < 15_000


def test_buffer_one_keeps_one_waiting_and_skips_the_rest(org: Organization, celery_worker_thread: object) -> None:
    schedule = _schedule(org, "buffer one", seconds=1.5, policy="buffer_one")
    first = _queue(schedule, 1)[0]
    dispatch_tick()
    wait_until(lambda: _statuses([first]) == ["running"], what="the first run to start")
    second, third = _queue(schedule, 2)
    dispatch_tick()
    # Both arrive while the first runs; whichever a worker claims first waits, the other is skipped.
    wait_until(lambda: sorted(_statuses([second, third])) == ["skipped", "waiting"], what="one wait, one skip")
    waiting = second if _statuses([second]) == ["waiting"] else third
    _pump(lambda: _statuses([first, waiting]) == ["succeeded", "succeeded"], what="the buffered run to run")
    second = waiting
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.finished_at is not None and second.started_at is not None
    assert second.started_at >= first.finished_at


def test_buffer_all_runs_every_run_one_at_a_time_in_order(org: Organization, celery_worker_thread: object) -> None:
    schedule = _schedule(org, "buffer all", seconds=0.5, policy="buffer_all")
    runs = _queue(schedule, 3)
    _pump(lambda: _statuses(runs) == ["succeeded"] * 3, what="all buffered runs to succeed")
    rows = list(Run.objects.filter(pk__in=[r.pk for r in runs]).order_by("started_at").values_list("pk", flat=True))
    assert rows == [r.pk for r in runs]
    spans = list(
        Run.objects.filter(pk__in=[r.pk for r in runs]).order_by("pk").values_list("started_at", "finished_at")
    )
    for (_, finished), (started, _) in itertools.pairwise(spans):
        assert started is not None and finished is not None
        assert started >= finished, "two runs of a max_concurrency=1 schedule overlapped"


def test_buffered_runs_keep_slot_order_when_a_newer_message_is_claimed_first(org: Organization) -> None:
    # Two workers take the messages of run 1 and run 2 at once and run 2's claim wins the race: it must wait for
    # run 1, which is still queued, instead of starting before it.
    from runs.executor import run_execute
    from runs.limits import waiting_release

    schedule = _schedule(org, "buffer all race", seconds=0, policy="buffer_all")
    first, second = _queue(schedule, 2)
    assert run_execute(run_id=second.pk, worker="w2") is None
    assert _statuses([first, second]) == ["queued", "waiting"]
    assert run_execute(run_id=first.pk, worker="w1") == RunStatus.SUCCEEDED
    assert waiting_release() == 1
    assert run_execute(run_id=second.pk, worker="w2") == RunStatus.SUCCEEDED
    (_, first_finished), (second_started, _) = (
        Run.objects.values_list("started_at", "finished_at").get(pk=r.pk) for r in (first, second)
    )
    assert first_finished is not None and second_started is not None
    assert second_started >= first_finished


def test_cancel_other_cancels_the_oldest_running_run(org: Organization, celery_worker_thread: object) -> None:
    schedule = _schedule(org, "cancel other", seconds=30, policy="cancel_other")
    old = _queue(schedule, 1)[0]
    dispatch_tick()
    wait_until(lambda: _statuses([old]) == ["running"], what="the old run to start")
    new = _queue(schedule, 1)[0]
    dispatch_tick()
    wait_until(lambda: _statuses([old, new]) == ["cancelled", "running"], what="the old run to be cancelled")
    run_cancel(run=new)
    wait_until(
        lambda: RunAttempt.objects.filter(run__in=[old, new], outcome=AttemptOutcome.CANCELLED).count() == 2,
        timeout=15,
        what="both attempts to stop",
    )


def test_allow_all_runs_overlapping_runs_together(org: Organization, celery_worker_thread: object) -> None:
    schedule = _schedule(org, "allow all", seconds=2, policy="allow_all")
    runs = _queue(schedule, 2)
    dispatch_tick()
    wait_until(lambda: _statuses(runs) == ["running", "running"], what="both runs to run at once")
    wait_until(lambda: _statuses(runs) == ["succeeded", "succeeded"], what="both runs to finish")


def test_org_limit_makes_runs_wait_and_start_by_priority_then_age(
    org: Organization, celery_worker_thread: object
) -> None:
    Organization.objects.filter(pk=org.pk).update(max_concurrent_runs=1)
    low = _schedule(org, "low", seconds=1, policy="allow_all", priority=2)
    high = _schedule(org, "high", seconds=1, policy="allow_all", priority=8)
    blocker = _queue(low, 1)[0]
    dispatch_tick()
    wait_until(lambda: _statuses([blocker]) == ["running"], what="the first run to start")
    older_low = _queue(low, 1)[0]
    newer_high = _queue(high, 1)[0]
    dispatch_tick()
    wait_until(lambda: _statuses([older_low, newer_high]) == ["waiting", "waiting"], what="both to wait")
    older_low.refresh_from_db()
    assert "organization limit" in older_low.status_reason

    _pump(lambda: _statuses([blocker, older_low, newer_high]) == ["succeeded"] * 3, what="all to finish")
    order = list(
        Run.objects.filter(pk__in=[blocker.pk, older_low.pk, newer_high.pk])
        .order_by("started_at")
        .values_list("pk", flat=True)
    )
    assert order == [blocker.pk, newer_high.pk, older_low.pk]
    spans = list(Run.objects.filter(organization=org).order_by("started_at").values_list("started_at", "finished_at"))
    for (_, finished), (started, _) in itertools.pairwise(spans):
        assert started is not None and finished is not None
        assert started >= finished, "the organization ran two runs at once with max_concurrent_runs=1"
