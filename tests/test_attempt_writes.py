"""The executor's PostgreSQL statements (runs/attempt_writes.py) write what the portable ORM path writes, keep
the organization's limit under concurrent claims, and leave every other case to the ORM path."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import OperationalError, connection, connections, transaction
from django.forms.models import model_to_dict
from django.test.utils import CaptureQueriesContext

from echoflow.accounts.models import Organization
from echoflow.events.models import OutboxEvent
from runs import attempt_writes, executor
from runs.executor import run_execute
from runs.models import AttemptOutcome, Run, RunAttempt, RunStatus
from runs.services import run_create_adhoc, schedule_run_now
from schedules.models import Schedule
from schedules.services import schedule_create
from tests.test_migration_ops import table_held_elsewhere

pytestmark = [pytest.mark.postgres]


def _schedule(org: Organization, name: str, **extra: Any) -> Schedule:
    return schedule_create(
        organization=org,
        data={"name": name, "trigger_kind": "cron", "cron": "0 0 1 1 *", "action_name": "echoflow.echo", **extra},
    )


def _masked(row: dict[str, Any], *names: str) -> dict[str, Any]:
    """Timestamps become whether they are set (two runs are not executed at the same instant)."""
    out = {}
    for name, value in row.items():
        if name in names:
            continue
        is_time = isinstance(value, datetime) or name.endswith("_at")
        out[name] = ("set" if value is not None else None) if is_time else value
    return out


def _written(run: Run) -> dict[str, Any]:
    run.refresh_from_db()
    attempts = [
        _masked(model_to_dict(a), "id", "run", "duration_ms")
        for a in RunAttempt.objects.filter(run=run).order_by("number")
    ]
    timing = {"lag_ms", "duration_ms"}
    events = [
        (e.type, e.attempt, e.schedule_id, e.organization_id, {k: v for k, v in e.data.items() if k not in timing})
        for e in OutboxEvent.objects.filter(run_id=run.pk).order_by("id")
    ]
    return {
        "run": _masked(model_to_dict(run), "id", "idempotency_key", "trace_id"),
        "attempts": attempts,
        "events": events,
    }


def _statements(queries: CaptureQueriesContext) -> list[str]:
    """The statements sent, without transaction control (the test's own transaction makes atomic() a savepoint)."""
    control = ("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK")
    return [q["sql"] for q in queries.captured_queries if not q["sql"].startswith(control)]


def _execute_orm(run: Run, monkeypatch: pytest.MonkeyPatch) -> str | None:
    with monkeypatch.context() as patch:
        patch.setattr(attempt_writes, "available", lambda: False)
        return run_execute(run_id=run.pk, worker="w1@host")


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["schedule", "slot", "whole-second-slot", "skip-policy", "buffer_all-policy", "adhoc"])
def test_the_fast_path_writes_what_the_orm_path_writes(
    org: Organization, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    if kind != "adhoc":
        policy = kind.removesuffix("-policy") if kind.endswith("-policy") else "allow_all"
        schedule = _schedule(org, "echo", payload={"n": 1, "text": "é'\""}, overlap_policy=policy)
        Schedule.objects.filter(pk=schedule.pk).update(consecutive_failures=2)
        first, second, third, fourth = (schedule_run_now(schedule=schedule)[0] for _ in range(4))
        if "slot" in kind:  # planned runs: the event names the slot, as isoformat() writes it
            slot = datetime(2026, 11, 23, 9, 30, 0, 0 if kind == "whole-second-slot" else 120, tzinfo=UTC)
            Run.objects.filter(pk__in=[first.pk, second.pk, third.pk, fourth.pk]).update(slot=slot, trigger="schedule")
    else:
        first, second, third, fourth = (
            run_create_adhoc(organization=org, action_kind="python", action_name="echoflow.echo", payload=[1, "x"])[0]
            for _ in range(4)
        )

    def reset_schedule() -> None:
        if first.schedule_id:
            Schedule.objects.filter(pk=first.schedule_id).update(consecutive_failures=2, last_run_status="")

    assert _execute_orm(first, monkeypatch) == RunStatus.SUCCEEDED
    orm = _written(first)
    schedule_after_orm = (
        Schedule.objects.values("last_run_status", "consecutive_failures").get(pk=first.schedule_id)
        if first.schedule_id
        else None
    )
    reset_schedule()
    with CaptureQueriesContext(connection) as queries:
        assert run_execute(run_id=second.pk, worker="w1@host") == RunStatus.SUCCEEDED
    fast = _written(second)
    # Two runs of one execute_runs message: the third's finish and the fourth's claim are one statement, its
    # claim seeing the third finished (under the skip and buffer policies, with one run allowed at a time, it
    # would otherwise have to skip or wait).
    reset_schedule()
    with CaptureQueriesContext(connection) as batch_queries:
        assert executor.run_execute_batch(
            run_ids=[third.pk, fourth.pk], worker="w1@host", give_back=lambda ids: None
        ) == [RunStatus.SUCCEEDED, RunStatus.SUCCEEDED]

    assert fast == orm
    assert _written(third) == _written(fourth) == orm
    # The fourth started after the third finished, in its times and in its events' order of occurrence.
    assert third.finished_at is not None and fourth.started_at is not None
    assert third.finished_at <= fourth.started_at
    assert (
        OutboxEvent.objects.get(run_id=third.pk, type="run.succeeded").occurred_at
        <= OutboxEvent.objects.get(run_id=fourth.pk, type="run.started").occurred_at
    )
    assert fast["run"]["status"] == RunStatus.SUCCEEDED and fast["run"]["output"] == second.payload
    assert [e[0] for e in fast["events"]] == ["run.queued", "run.started", "run.succeeded"]
    if first.schedule_id:
        assert (
            Schedule.objects.values("last_run_status", "consecutive_failures").get(pk=first.schedule_id)
            == schedule_after_orm
            == {"last_run_status": "succeeded", "consecutive_failures": 0}
        )
    # Claim, succeed: two statements (each its own transaction outside a test), not the ORM path's fourteen.
    assert len(_statements(queries)) == 2, _statements(queries)
    # Claim, succeed-then-claim, succeed.
    assert [s.split("(")[0] for s in _statements(batch_queries)] == [
        "SELECT * FROM echoflow_run_claim",
        "SELECT * FROM echoflow_run_succeed_then_claim",
        "SELECT echoflow_run_succeed",
    ]


@pytest.mark.django_db
def test_a_run_over_the_organization_limit_waits_with_its_reason(org: Organization) -> None:
    Organization.objects.filter(pk=org.pk).update(max_concurrent_runs=1)
    busy, _ = run_create_adhoc(organization=org, action_kind="python", action_name="echoflow.noop")
    Run.objects.filter(pk=busy.pk).update(status=RunStatus.RUNNING, attempts=1)
    run, _ = run_create_adhoc(organization=org, action_kind="python", action_name="echoflow.noop")

    assert run_execute(run_id=run.pk, worker="w") is None

    run.refresh_from_db()
    assert (run.status, run.waiting_for, run.attempts) == (RunStatus.WAITING, "organization", 0)
    assert "organization limit: 1 of 1 runs running" in run.status_reason
    assert not RunAttempt.objects.filter(run=run).exists()
    assert list(OutboxEvent.objects.filter(run_id=run.pk).values_list("type", flat=True)) == [
        "run.queued",
        "run.waiting",
    ]


@pytest.mark.django_db
def test_a_run_behind_a_waiting_run_of_higher_priority_waits(org: Organization) -> None:
    ahead, _ = run_create_adhoc(organization=org, action_kind="python", action_name="echoflow.noop", priority=9)
    Run.objects.filter(pk=ahead.pk).update(status=RunStatus.WAITING, waiting_for="organization")
    run, _ = run_create_adhoc(organization=org, action_kind="python", action_name="echoflow.noop", priority=5)

    assert run_execute(run_id=run.pk, worker="w") is None
    assert Run.objects.get(pk=run.pk).status == RunStatus.WAITING


@pytest.mark.django_db
def test_a_run_that_is_not_queued_is_left_alone(org: Organization) -> None:
    run, _ = run_create_adhoc(organization=org, action_kind="python", action_name="echoflow.noop")
    assert run_execute(run_id=run.pk, worker="w") == RunStatus.SUCCEEDED
    # A duplicate delivery of the same message: the lock statement, nothing written.
    with CaptureQueriesContext(connection) as queries:
        assert run_execute(run_id=run.pk, worker="w") is None
    assert RunAttempt.objects.filter(run=run).count() == 1
    assert len(_statements(queries)) == 1
    assert Run.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED
    assert run_execute(run_id=10**12, worker="w") is None  # no such run


@pytest.mark.django_db
def test_a_run_its_overlap_policy_must_decide_on_takes_the_orm_path(org: Organization) -> None:
    schedule = _schedule(org, "one-at-a-time", overlap_policy="skip", max_concurrency=1)
    busy, _ = schedule_run_now(schedule=schedule)
    Run.objects.filter(pk=busy.pk).update(status=RunStatus.RUNNING, attempts=1)
    run, _ = schedule_run_now(schedule=schedule)

    assert run_execute(run_id=run.pk, worker="w") is None
    run.refresh_from_db()
    assert run.status == RunStatus.SKIPPED and "overlap policy skip" in run.status_reason


@pytest.mark.django_db
@pytest.mark.parametrize("policy", ["buffer_one", "buffer_all"])
def test_a_buffered_run_behind_an_older_queued_run_of_its_schedule_waits(org: Organization, policy: str) -> None:
    schedule = _schedule(org, "in-order", overlap_policy=policy, max_concurrency=1)
    older, _ = schedule_run_now(schedule=schedule)
    newer, _ = schedule_run_now(schedule=schedule)

    assert run_execute(run_id=newer.pk, worker="w") is None  # its message came first; the older run is ahead
    assert Run.objects.get(pk=newer.pk).status == RunStatus.WAITING
    assert run_execute(run_id=older.pk, worker="w") == RunStatus.SUCCEEDED


@pytest.mark.django_db
@pytest.mark.parametrize("policy", ["skip", "buffer_one", "buffer_all", "cancel_other"])
def test_a_schedule_with_room_under_its_policy_starts_on_the_fast_path(org: Organization, policy: str) -> None:
    schedule = _schedule(org, "room", overlap_policy=policy, max_concurrency=2)
    busy, _ = schedule_run_now(schedule=schedule)
    Run.objects.filter(pk=busy.pk).update(status=RunStatus.RUNNING, attempts=1)  # one of two running
    run, _ = schedule_run_now(schedule=schedule)

    with CaptureQueriesContext(connection) as queries:
        assert run_execute(run_id=run.pk, worker="w") == RunStatus.SUCCEEDED
    assert len(_statements(queries)) == 2, _statements(queries)


@pytest.mark.django_db
def test_a_success_after_the_run_was_cancelled_changes_only_the_attempt(org: Organization) -> None:
    run, _ = run_create_adhoc(organization=org, action_kind="python", action_name="echoflow.noop")
    with transaction.atomic():
        locked, started = attempt_writes.run_claim(run.pk, worker="w", now=run.created_at, occurred_at=run.created_at)
        assert locked is not None and started
    Run.objects.filter(pk=run.pk).update(status=RunStatus.CANCELLED)

    moved = attempt_writes.run_succeed(
        locked.run, number=1, output={"x": 1}, duration_ms=5, now=run.created_at, occurred_at=run.created_at
    )

    assert moved is False
    assert Run.objects.get(pk=run.pk).status == RunStatus.CANCELLED
    attempt = RunAttempt.objects.get(run=run)
    assert (attempt.outcome, attempt.output) == (AttemptOutcome.SUCCEEDED, {"x": 1})
    assert not OutboxEvent.objects.filter(run_id=run.pk, type="run.succeeded").exists()


def _locks_waited() -> int:
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        return int(cursor.fetchone()[0])


@pytest.mark.django_db(transaction=True)
def test_a_claim_waiting_for_the_organization_lock_sees_the_claim_that_held_it(org: Organization) -> None:
    """The limit check must run after the lock is granted: a claim that waited for another's lock sees it start."""
    Organization.objects.filter(pk=org.pk).update(max_concurrent_runs=1)
    first, _ = run_create_adhoc(organization=org, action_kind="python", action_name="echoflow.noop")
    second, _ = run_create_adhoc(organization=org, action_kind="python", action_name="echoflow.noop")
    holding, release = threading.Event(), threading.Event()
    results: dict[str, Any] = {}

    def claim_first() -> None:
        # Another worker's claim of the first run, between its lock and its commit.
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT id FROM accounts_organization WHERE id = %s FOR NO KEY UPDATE", [org.pk])
                holding.set()
                release.wait(10)
                Run.objects.filter(pk=first.pk).update(status=RunStatus.RUNNING, attempts=1)
        finally:
            connection.close()

    def claim_second() -> None:
        try:
            results["second"] = executor._claim(second.pk, "b", second.created_at)
        finally:
            connection.close()

    a = threading.Thread(target=claim_first)
    a.start()
    assert holding.wait(10)
    b = threading.Thread(target=claim_second)
    b.start()
    deadline = time.monotonic() + 10
    while _locks_waited() == 0:  # the second claim waits for the organization row
        assert time.monotonic() < deadline, "the second claim never waited for the organization lock"
        time.sleep(0.01)
    release.set()
    a.join(10)
    b.join(10)

    assert results == {"second": None}
    assert Run.objects.get(pk=second.pk).status == RunStatus.WAITING
    assert Run.objects.get(pk=second.pk).waiting_for == "organization"


def _prepared() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


@pytest.mark.django_db
@pytest.mark.parametrize("threshold", [5, None])
def test_the_hot_statements_are_prepared_unless_turned_off(org: Organization, threshold: int | None) -> None:
    # Planning them cost more than running them; DATABASE_URL's ?prepare_threshold=none (PgBouncer) turns it off.
    connection.ensure_connection()
    before = connection.connection.prepare_threshold
    connection.connection.prepare_threshold = threshold
    try:
        for _ in range(7):
            run, _ = run_create_adhoc(organization=org, action_kind="python", action_name="echoflow.noop")
            assert run_execute(run_id=run.pk, worker="w") == RunStatus.SUCCEEDED
        prepared = _prepared()
    finally:
        connection.connection.prepare_threshold = before
    if threshold is None:
        assert prepared == []
    else:
        marks = ("echoflow_run_claim", "echoflow_run_succeed(")
        assert len([s for s in prepared if any(mark in s for mark in marks)]) == 2


@pytest.mark.django_db
def test_the_claim_function_returns_the_columns_the_executor_reads() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM echoflow_run_claim(0, 'w', now(), now())")
        assert cursor.fetchall() == []  # no such run
        names = [column.name for column in cursor.description]
    assert names == [*attempt_writes._RUN_COLUMNS, "signing_secret", "started"]


# The indexes that lead by a run's status: reading a run through one of them reads every run in that status.
_BY_STATUS = ("run_status_idx", "run_resend_due_idx", "run_to_enqueue_idx")


def index_entries_read(indexes: tuple[str, ...] = _BY_STATUS) -> int:
    """Entries of these indexes (runs_run's status indexes by default) read so far by this transaction (its own
    statistics)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT sum(pg_stat_get_xact_tuples_returned(name::regclass)) FROM unnest(%s::text[]) AS name",
            [list(indexes)],
        )
        return int(cursor.fetchone()[0])


@pytest.mark.django_db
def test_the_claim_and_the_finish_find_their_run_by_key_however_many_share_its_status(org: Organization) -> None:
    # Statistics from a quiet moment (no run queued or running), then a burst. Both statements must find their run
    # by its key: with a status condition the planner could read it through a status index, and so read every run
    # queued (the claim, runs.0010) or running (the finish), a burst in O(N^2).
    def burst(count: int, tag: str) -> list[Run]:
        return [
            run_create_adhoc(
                organization=org, action_kind="python", action_name="echoflow.noop", idempotency_key=f"{tag}-{i}"
            )[0]
            for i in range(count)
        ]

    Run.objects.filter(pk__in=[r.pk for r in burst(200, "quiet")]).update(status=RunStatus.SUCCEEDED)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE runs_run")
    queued = burst(300, "burst")
    mine = queued[-8:]  # PL/pgSQL and psycopg plan anew for the first five calls, then may keep a generic plan
    before = index_entries_read()

    for run in mine:
        locked, started = attempt_writes.run_claim(run.pk, worker="w", now=run.created_at, occurred_at=run.created_at)
        assert locked is not None and started
    # Counting the organization's running runs (its limit) reads the ones claimed so far (28 in all, and the entries
    # of runs other tests rolled back, once); reading the run through a status index would read the 292-300 runs
    # queued, for each claim.
    assert index_entries_read() - before < 300

    # Runs that other workers are running meanwhile: the finish must not read them.
    Run.objects.filter(pk__in=[r.pk for r in queued[:50]]).update(status=RunStatus.RUNNING, attempts=1)
    before = index_entries_read()
    for run in mine:
        assert attempt_writes.run_succeed(
            run, number=1, output=None, duration_ms=1, now=run.created_at, occurred_at=run.created_at
        )
    assert index_entries_read() == before
    assert Run.objects.filter(pk__in=[r.pk for r in mine], status=RunStatus.SUCCEEDED).count() == 8


@pytest.mark.django_db(transaction=True)
def test_a_claim_outside_a_transaction_is_committed_when_it_returns(org: Organization) -> None:
    run, _ = run_create_adhoc(organization=org, action_kind="python", action_name="echoflow.noop")
    assert connection.get_autocommit()

    claimed = executor._claim(run.pk, "w", run.created_at)

    assert claimed is not None and claimed[1] == 1
    observed: dict[str, Any] = {}

    def look() -> None:  # another connection, as the reaper or the API would see it
        try:
            observed["run"] = Run.objects.values_list("status", "attempts", "worker").get(pk=run.pk)
            observed["attempts"] = list(RunAttempt.objects.filter(run_id=run.pk).values_list("number", "outcome"))
        finally:
            connection.close()

    other = threading.Thread(target=look)
    other.start()
    other.join(10)
    assert observed == {"run": (RunStatus.RUNNING, 1, "w"), "attempts": [(1, AttemptOutcome.RUNNING)]}


def _old_running_and_new_queued(org: Organization) -> tuple[Run, Run]:
    """Two runs of a cancel_other schedule allowing one at a time: the old one running, the new one queued."""
    schedule = _schedule(org, "cancel other", overlap_policy="cancel_other", max_concurrency=1)
    old, _ = schedule_run_now(schedule=schedule)
    assert executor._claim(old.pk, "a", old.created_at) is not None
    new, _ = schedule_run_now(schedule=schedule)
    return old, new


def _claim_while_the_old_row_is_held(
    old: Run, new: Run, *, reached: Callable[[], bool], then: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """Thread A locks the old run's row (as a finish or a heartbeat does first) and holds it until thread B's claim
    of the new run has ``reached`` that row; then A runs ``then`` in the same transaction and commits. Returns what
    each side returned or raised (PostgreSQL fails one side of a deadlock: whichever it is, the test sees it)."""
    holding, release = threading.Event(), threading.Event()
    results: dict[str, Any] = {}

    def hold_old() -> None:
        try:
            with transaction.atomic():
                Run.objects.filter(pk=old.pk).update(heartbeat_at=old.created_at)
                holding.set()
                release.wait(10)
                results.update(then())
        except Exception as exc:
            results["holder error"] = repr(exc)
        finally:
            connection.close()

    def claim_new() -> None:
        try:
            results["claimed"] = executor._claim(new.pk, "b", new.created_at) is not None
        except Exception as exc:
            results["claim error"] = repr(exc)
        finally:
            connection.close()

    a = threading.Thread(target=hold_old)
    a.start()
    assert holding.wait(10)
    b = threading.Thread(target=claim_new)
    b.start()
    deadline = time.monotonic() + 10
    while not reached():
        assert time.monotonic() < deadline, "the claim never reached the running run's row"
        time.sleep(0.01)
    release.set()
    a.join(15)
    b.join(15)
    return results


@pytest.mark.django_db(transaction=True)
def test_cancel_other_does_not_deadlock_with_the_finish_of_the_run_it_would_cancel(
    org: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A finish locks its run, then updates the schedule (last outcome); a cancel_other claim locks the schedule,
    then the running run it would cancel. Interleaved, PostgreSQL used to break the cycle by failing one of them
    ("deadlock detected"): the claim (its run then waited for a re-send) or the finish (a succeeded run left
    "running" for the reaper). Now the claim does not wait for that run while holding the schedule: it lets go,
    tries again, and sees the run finished."""
    old, new = _old_running_and_new_queued(org)
    backed_off = threading.Event()
    pause = executor._lock_busy_pause

    def noted_pause(tries: int) -> None:
        backed_off.set()
        pause(tries)

    monkeypatch.setattr(executor, "_lock_busy_pause", noted_pause)
    results = _claim_while_the_old_row_is_held(
        old,
        new,
        # The claim found the row busy and backed off (or, before the fix, waits for it).
        reached=lambda: backed_off.is_set() or _locks_waited() > 0,
        # The rest of the old run's finish: run_succeed's statement, which also updates the schedule's row.
        then=lambda: {
            "finished": attempt_writes.run_succeed(
                old, number=1, output=None, duration_ms=1, now=old.created_at, occurred_at=old.created_at
            )
        },
    )

    assert results == {"finished": True, "claimed": True}
    assert Run.objects.get(pk=old.pk).status == RunStatus.SUCCEEDED
    assert Run.objects.get(pk=new.pk).status == RunStatus.RUNNING


@pytest.mark.django_db(transaction=True)
def test_cancel_other_still_cancels_a_run_whose_row_was_busy_for_every_quick_try(
    org: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The running run's row stays locked by a write that does not finish it (a heartbeat): after its quick tries
    the claim waits for the lock, then cancels that run and starts its own, as cancel_other says."""
    monkeypatch.setattr(executor, "LOCK_BUSY_TRIES", 3)
    monkeypatch.setattr(executor, "_lock_busy_pause", lambda tries: None)
    old, new = _old_running_and_new_queued(org)
    # The last try waits for the old run's row.
    results = _claim_while_the_old_row_is_held(old, new, reached=lambda: _locks_waited() > 0, then=dict)

    assert results == {"claimed": True}
    assert Run.objects.get(pk=old.pk).status == RunStatus.CANCELLED
    assert Run.objects.get(pk=new.pk).status == RunStatus.RUNNING


def _finished_and_next(org: Organization, same_schedule: bool) -> tuple[Run, Run]:
    """A running run of one schedule (claimed; its action done) and a queued run of another schedule, or of the
    same one, to be claimed with its finish."""
    first = _schedule(org, "first")
    done, _ = schedule_run_now(schedule=first)
    following, _ = schedule_run_now(schedule=first if same_schedule else _schedule(org, "second"))
    locked, started = attempt_writes.run_claim(done.pk, worker="a", now=done.created_at, occurred_at=done.created_at)
    assert locked is not None and started
    return locked.run, following


def _succeed_then_claim(done: Run, following: Run) -> tuple[bool, tuple[attempt_writes.LockedRun | None, bool] | None]:
    now = following.created_at
    return attempt_writes.run_succeed_then_claim(
        done, number=1, output=None, duration_ms=1, now=now, occurred_at=now, next_run_id=following.pk,
        worker="a", next_now=now, next_occurred_at=now,
    )  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_finishes_that_claim_each_others_schedules_runs_do_not_wait_for_each_other(org: Organization) -> None:
    """Process A finishes a run of schedule 1 and claims one of schedule 2 while process B, in the middle of the same
    with the schedules the other way round, holds schedule 2's row (its finish wrote the last outcome there) and
    will want schedule 1's. Were A's claim to wait for schedule 2 while holding schedule 1, the two would deadlock.
    It does not wait: A's finish commits and the next run is left for a claim of its own."""
    done, following = _finished_and_next(org, same_schedule=False)
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '5s'")  # a wait would fail the test, not hang it
    with table_held_elsewhere("schedules_schedule") as process_b:
        process_b.execute(
            "UPDATE schedules_schedule SET consecutive_failures = 0 WHERE id = %s", [following.schedule_id]
        )
        started = time.monotonic()
        moved, fast = _succeed_then_claim(done, following)
        assert time.monotonic() - started < 4  # not a lock wait
        # B goes on to the other schedule's row: free, A has committed.
        process_b.execute("SET lock_timeout = '5s'")
        process_b.execute("UPDATE schedules_schedule SET consecutive_failures = 0 WHERE id = %s", [done.schedule_id])

    assert (moved, fast) == (True, None)
    assert Run.objects.get(pk=done.pk).status == RunStatus.SUCCEEDED
    assert Run.objects.get(pk=following.pk).status == RunStatus.QUEUED
    # The batch claims it on its own then.
    claimed = executor._claim(following.pk, "a", following.created_at)
    assert claimed is not None and Run.objects.get(pk=following.pk).status == RunStatus.RUNNING


@pytest.mark.django_db(transaction=True)
def test_a_next_run_whose_row_is_busy_is_left_for_a_claim_of_its_own(org: Organization) -> None:
    done, following = _finished_and_next(org, same_schedule=True)
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '5s'")
    with table_held_elsewhere("runs_run") as other:
        other.execute("SELECT id FROM runs_run WHERE id = %s FOR UPDATE", [following.pk])
        moved, fast = _succeed_then_claim(done, following)

    assert (moved, fast) == (True, None)
    assert Run.objects.get(pk=done.pk).status == RunStatus.SUCCEEDED
    assert Run.objects.get(pk=following.pk).status == RunStatus.QUEUED


@pytest.mark.django_db(transaction=True)
def test_the_next_run_of_the_same_schedule_is_claimed_with_the_finish(org: Organization) -> None:
    # The schedule's row, locked by the finish, is this transaction's own: no reason to leave the claim.
    done, following = _finished_and_next(org, same_schedule=True)

    moved, fast = _succeed_then_claim(done, following)

    assert moved and fast is not None
    locked, started = fast
    assert started and locked is not None and locked.run.pk == following.pk
    assert Run.objects.get(pk=following.pk).status == RunStatus.RUNNING


@pytest.mark.django_db(transaction=True)
def test_a_batch_whose_combined_statement_fails_records_the_outcome_and_claims_apart(
    org: Organization, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    runs = [run_create_adhoc(organization=org, action_kind="python", action_name="echoflow.noop")[0] for _ in range(3)]

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(attempt_writes, "run_succeed_then_claim", failing)
    statuses = executor.run_execute_batch(run_ids=[r.pk for r in runs], worker="w", give_back=lambda ids: None)

    assert statuses == [RunStatus.SUCCEEDED] * 3
    assert {r.status for r in Run.objects.filter(pk__in=[r.pk for r in runs])} == {RunStatus.SUCCEEDED}
    assert caplog.text.count("its finish with the next run's claim failed") == 2


@pytest.mark.django_db(transaction=True)
def test_a_run_claimed_with_a_finish_that_its_policy_must_decide_on_takes_the_orm_path(org: Organization) -> None:
    # The next run's schedule allows one run at a time and skips the rest; one of its runs is running elsewhere. The
    # claim made with the finish does not start it, and the batch lets its policy decide: it is skipped.
    busy_schedule = _schedule(org, "one at a time", overlap_policy="skip", max_concurrency=1)
    running, _ = schedule_run_now(schedule=busy_schedule)
    assert executor._claim(running.pk, "elsewhere", running.created_at) is not None
    following, _ = schedule_run_now(schedule=busy_schedule)
    first, _ = run_create_adhoc(organization=org, action_kind="python", action_name="echoflow.noop")

    with CaptureQueriesContext(connection) as queries:
        statuses = executor.run_execute_batch(run_ids=[first.pk, following.pk], worker="w", give_back=lambda ids: None)

    assert statuses == [RunStatus.SUCCEEDED, None]
    assert any("echoflow_run_succeed_then_claim" in q for q in _statements(queries))
    skipped = Run.objects.get(pk=following.pk)
    assert skipped.status == RunStatus.SKIPPED
    assert skipped.status_reason.startswith("overlap policy skip")
    assert Run.objects.get(pk=running.pk).status == RunStatus.RUNNING
