"""Stopping attempts, with a real prefork worker.

Graceful shutdown: SIGTERM lets a running attempt finish within the grace period; one that does not finish is
recorded ``interrupted`` and its run retried at once, without using up its retry budget. An action that ignores
its cancellation flag (cancel, timeout) is ended with its pool process once its outcome is recorded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.utils import timezone

from bench.memory import children_of
from echoflow.accounts.models import Organization
from echoflow.events.models import OutboxEvent
from runs.dispatcher import TickResult, dispatch_tick
from runs.executor import run_execute
from runs.models import AttemptOutcome, Run, RunAttempt, RunStatus
from runs.sending import runs_messages, send_runs
from runs.services import run_cancel, runs_interrupt, runs_reap, schedule_run_now
from schedules.models import Schedule
from schedules.services import schedule_create
from tests.conftest import child_env, wait_until

ROOT = Path(__file__).resolve().parent.parent


def _sleeper(org: Organization, seconds: float, *, max_attempts: int = 1) -> Schedule:
    return schedule_create(
        organization=org,
        data={
            "name": f"sleep {seconds}",
            "trigger_kind": "cron",
            "cron": "0 0 1 1 *",
            "action_name": "echoflow.sleep",
            "payload": {"seconds": seconds},
            "max_attempts": max_attempts,
            "backoff_seconds": [600],
        },
    )


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[object]:
    """Start a real prefork worker process with a given grace period; killed at the end whatever happens."""
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    started: list[subprocess.Popen[bytes]] = []

    def start(grace: float, **extra: str) -> subprocess.Popen[bytes]:
        env = {**child_env(tmp_path, ECHOFLOW_SHUTDOWN_GRACE=str(grace)), **extra}
        worker = subprocess.Popen(
            [
                *(sys.executable, "-m", "celery", "-A", "echoflow", "worker", "--pool", "prefork", "-c", "1"),
                *("-n", "shutdown-test@%h", "-Q", settings.WORKER_QUEUES, "-l", "warning"),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "worker.log", "ab"),  # noqa: SIM115 - closed with the process
            start_new_session=True,
        )
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)


def _echo(org: Organization, name: str) -> Schedule:
    return schedule_create(
        organization=org,
        data={"name": name, "trigger_kind": "cron", "cron": "0 0 1 1 *", "action_name": "echoflow.echo",
              "payload": {"name": name}},
    )  # fmt: skip


def _dispatch_recording_messages() -> tuple[TickResult, list[list[int]]]:
    """Dispatch what is due, sending it as usual; also returns the run ids of each message sent."""
    messages: list[list[int]] = []

    def send(rows: list[tuple[int, int]]) -> None:
        messages.extend(ids for per_queue in runs_messages(rows).values() for ids in per_queue)
        send_runs(rows)

    return dispatch_tick(sender=send), messages


def _executed_once(run: Run) -> bool:
    run.refresh_from_db()
    outcomes = list(RunAttempt.objects.filter(run=run).values_list("outcome", flat=True))
    return run.status == RunStatus.SUCCEEDED and run.attempts == 1 and outcomes == [AttemptOutcome.SUCCEEDED]


def _start_and_wait_running(run: Run) -> None:
    dispatch_tick()
    wait_until(
        lambda: Run.objects.filter(pk=run.pk, status=RunStatus.RUNNING).exists(), timeout=60, what="the run to start"
    )


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_sigterm_lets_the_running_attempt_finish_within_the_grace_period(org: Organization, start_worker) -> None:
    run, _ = schedule_run_now(schedule=_sleeper(org, 3))
    worker = start_worker(grace=60)
    _start_and_wait_running(run)

    worker.send_signal(signal.SIGTERM)
    assert worker.wait(45) == 0  # it waited for the attempt, then exited cleanly

    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    assert [a.outcome for a in RunAttempt.objects.filter(run=run)] == [AttemptOutcome.SUCCEEDED]


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_sigterm_records_an_unfinished_attempt_interrupted_and_the_run_is_retried_elsewhere(
    org: Organization, start_worker
) -> None:
    # max_attempts=1: a failure would be final, but an interruption is not the action's fault.
    run, _ = schedule_run_now(schedule=_sleeper(org, 120, max_attempts=1))
    worker = start_worker(grace=1)
    _start_and_wait_running(run)
    hostname = Run.objects.get(pk=run.pk).worker
    assert hostname.startswith("shutdown-test@")

    signalled = timezone.now()
    worker.send_signal(signal.SIGTERM)
    # Well before the 120 s action could end: the grace period is 1 s and the executor heartbeats every 2 s.
    assert worker.wait(30) == 0

    run.refresh_from_db()
    assert run.status == RunStatus.RETRYING
    assert run.next_attempt_at is not None and signalled <= run.next_attempt_at <= timezone.now()  # no backoff
    attempt = RunAttempt.objects.get(run=run, number=1)
    assert attempt.outcome == AttemptOutcome.INTERRUPTED
    assert "1 s grace period" in attempt.error and hostname in attempt.error
    assert attempt.finished_at is not None
    types = list(OutboxEvent.objects.filter(run_id=run.pk).order_by("id").values_list("type", flat=True))
    assert types[-1] == "run.retrying"

    # Another worker takes it at the next tick and it runs to the end: the retry budget was not used up.
    assert run.schedule_id is not None
    Schedule.objects.filter(pk=run.schedule_id).update(payload={"seconds": 0})
    Run.objects.filter(pk=run.pk).update(payload={"seconds": 0})
    tick = dispatch_tick(sender=lambda rows: None)
    assert tick.retried == 1
    assert run_execute(run_id=run.pk, worker="other@host") == RunStatus.SUCCEEDED
    outcomes = list(RunAttempt.objects.filter(run=run).order_by("number").values_list("outcome", flat=True))
    assert outcomes == [AttemptOutcome.INTERRUPTED, AttemptOutcome.SUCCEEDED]


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_a_pool_process_killed_mid_batch_leaves_every_run_of_it_executed_once(
    org: Organization, start_worker, settings: Any
) -> None:
    # One execute_runs message of four runs, in this order (earliest due first): one done before the kill, the
    # one running when its pool process is killed, and two that the batch had not reached.
    settings.ECHOFLOW = {**settings.ECHOFLOW, "RUN_BATCH_MAX": 4, "RUN_BATCH_SPREAD": 1}
    done, _ = schedule_run_now(schedule=_echo(org, "done"))
    killed, _ = schedule_run_now(schedule=_sleeper(org, 120))
    rest = [schedule_run_now(schedule=_echo(org, f"rest {i}"))[0] for i in range(2)]
    # No give-back while the sleeper runs: the two others stay in the batch when its process dies.
    worker = start_worker(grace=60, ECHOFLOW_RUN_BATCH_SPILL="600")
    tick, messages = _dispatch_recording_messages()
    assert tick.enqueued == 4 and messages == [[done.pk, killed.pk, *(r.pk for r in rest)]]  # one message
    wait_until(lambda: Run.objects.filter(pk=killed.pk, status=RunStatus.RUNNING).exists(), what="the sleeper")
    assert _executed_once(done)
    assert Run.objects.filter(pk__in=[r.pk for r in rest], status=RunStatus.QUEUED).count() == 2  # held

    (pool,) = children_of(worker.pid)  # the pool process
    os.kill(pool, signal.SIGKILL)

    # The message is delivered again (acks_late, reject_on_worker_lost) to the fresh pool process: the runs the
    # batch had not reached run once; the finished one and the one that was running are left alone.
    wait_until(lambda: all(_executed_once(run) for run in rest), timeout=60, what="the rest of the batch")
    assert _executed_once(done)
    killed.refresh_from_db()
    assert killed.status == RunStatus.RUNNING and killed.attempts == 1
    # Its heartbeat stops with the process: the reaper records the attempt lost.
    Run.objects.filter(pk=killed.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert runs_reap() == 1
    assert RunAttempt.objects.get(run=killed, number=1).outcome == AttemptOutcome.LOST
    assert worker.poll() is None  # the worker itself lived on


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_sigterm_during_a_batch_interrupts_the_running_attempt_and_leaves_the_rest_to_another_worker(
    org: Organization, start_worker, settings: Any
) -> None:
    settings.ECHOFLOW = {**settings.ECHOFLOW, "RUN_BATCH_MAX": 3, "RUN_BATCH_SPREAD": 1}
    running, _ = schedule_run_now(schedule=_sleeper(org, 120))
    rest = [schedule_run_now(schedule=_echo(org, f"rest {i}"))[0] for i in range(2)]
    worker = start_worker(grace=1)  # the default give-back: after 0.25 s the batch sends the two others back
    tick, messages = _dispatch_recording_messages()
    assert tick.enqueued == 3 and messages == [[running.pk, *(r.pk for r in rest)]]  # one message
    wait_until(lambda: Run.objects.filter(pk=running.pk, status=RunStatus.RUNNING).exists(), what="the sleeper")

    worker.send_signal(signal.SIGTERM)
    assert worker.wait(45) == 0

    running.refresh_from_db()
    assert running.status == RunStatus.RETRYING
    assert RunAttempt.objects.get(run=running, number=1).outcome == AttemptOutcome.INTERRUPTED
    # The stopping worker did not start the runs behind the sleeper; their message is back in the broker.
    assert Run.objects.filter(pk__in=[r.pk for r in rest], status=RunStatus.QUEUED, attempts=0).count() == 2
    start_worker(grace=60)  # another worker takes them, without waiting for the dispatcher to send them again
    wait_until(lambda: all(_executed_once(run) for run in rest), timeout=60, what="the rest, on another worker")


@pytest.mark.django_db
def test_interrupt_touches_only_that_workers_executing_runs(org: Organization) -> None:
    schedule = _sleeper(org, 0, max_attempts=3)
    now = timezone.now()
    mine, _ = schedule_run_now(schedule=schedule)
    theirs, _ = schedule_run_now(schedule=schedule, idempotency_key="theirs")
    awaiting, _ = schedule_run_now(schedule=schedule, idempotency_key="awaiting")
    for run, worker, report_by in ((mine, "a@h", None), (theirs, "b@h", None), (awaiting, "a@h", now)):
        Run.objects.filter(pk=run.pk).update(
            status=RunStatus.RUNNING, attempts=1, worker=worker, heartbeat_at=now, report_by=report_by
        )
        RunAttempt.objects.create(run=run, number=1, started_at=now, worker=worker)

    assert runs_interrupt(worker="a@h", reason="test") == 1
    assert Run.objects.get(pk=mine.pk).status == RunStatus.RETRYING
    assert Run.objects.get(pk=theirs.pk).status == RunStatus.RUNNING
    assert Run.objects.get(pk=awaiting.pk).status == RunStatus.RUNNING  # waits for its external report
    assert runs_interrupt(worker="a@h", reason="test") == 0  # once


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_a_cold_shutdown_records_the_attempt_interrupted_at_once(org: Organization, start_worker) -> None:
    run, _ = schedule_run_now(schedule=_sleeper(org, 120, max_attempts=1))
    worker = start_worker(grace=600)  # the grace period does not apply to a cold shutdown
    _start_and_wait_running(run)

    worker.send_signal(signal.SIGQUIT)
    worker.wait(30)

    run.refresh_from_db()
    assert run.status == RunStatus.RETRYING
    attempt = RunAttempt.objects.get(run=run, number=1)
    assert attempt.outcome == AttemptOutcome.INTERRUPTED
    assert "cold shutdown" in attempt.error


def _pool_children(worker: subprocess.Popen[bytes]) -> set[int]:
    path = Path(f"/proc/{worker.pid}/task/{worker.pid}/children")
    return {int(pid) for pid in path.read_text().split()}


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("how", ["cancel", "timeout"])
def test_an_action_that_ignores_cancellation_is_ended_with_its_pool_process(
    org: Organization, start_worker, how: str
) -> None:
    schedule = schedule_create(
        organization=org,
        data={
            "name": "stubborn",
            "trigger_kind": "cron",
            "cron": "0 0 1 1 *",
            "action_name": "echoflow.sleep",
            "payload": {"seconds": 300, "cooperative": False},
            "max_attempts": 1,
            "timeout_seconds": 3 if how == "timeout" else 600,
        },
    )
    run, _ = schedule_run_now(schedule=schedule)
    worker = start_worker(grace=30)
    _start_and_wait_running(run)
    wait_until(lambda: bool(_pool_children(worker)), what="the pool process")
    before = _pool_children(worker)

    if how == "cancel":
        run_cancel(run=Run.objects.get(pk=run.pk), reason="stop it")
    final = RunStatus.CANCELLED if how == "cancel" else RunStatus.TIMED_OUT
    attempt_outcome = AttemptOutcome.CANCELLED if how == "cancel" else AttemptOutcome.TIMED_OUT
    # The flag is noticed at the next heartbeat (2 s), the action gets 5 s to stop, then its process is ended.
    wait_until(
        lambda: RunAttempt.objects.filter(run=run, number=1, outcome=attempt_outcome).exists(),
        timeout=30,
        what="the attempt to be closed",
    )
    wait_until(lambda: not (before & _pool_children(worker)), timeout=30, what="the stuck pool process to end")
    wait_until(lambda: bool(_pool_children(worker)), timeout=30, what="a fresh pool process")
    assert worker.poll() is None  # the worker itself lives on
    assert Run.objects.get(pk=run.pk).status == final

    # The fresh pool process takes the next run.
    Schedule.objects.filter(pk=schedule.pk).update(payload={"seconds": 0}, timeout_seconds=60)
    quick, _ = schedule_run_now(schedule=Schedule.objects.get(pk=schedule.pk), idempotency_key="quick")
    dispatch_tick()
    wait_until(
        lambda: Run.objects.filter(pk=quick.pk, status=RunStatus.SUCCEEDED).exists(),
        timeout=60,
        what="the next run to succeed",
    )
