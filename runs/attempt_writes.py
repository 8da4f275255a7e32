"""The executor's writes on PostgreSQL in as few round trips as the guarantees allow: claiming a queued run and
recording a successful attempt. Every other case (SQLite, an overlap policy to apply, a run that must wait, a
failed, cancelled or timed-out attempt) takes the portable ORM path in ``runs.executor`` and ``runs.limits``.

A no-op run through the ORM path cost about 14 statements and 13 ms of the worker's CPU, most of it Django building
queries (``docs/benchmarks.md`` §4); here it is one statement to claim and one to finish, written by hand and
prepared (``run_writes.server_binding_cursor``).

**Claim**: ``SELECT * FROM echoflow_run_claim(run, worker, now, occurred_at)``, the PL/pgSQL function created by
migration ``runs/0008`` (its UPDATE finds the run by its key alone since ``runs/0010``). The executor calls it
outside a transaction, so BEGIN, the locks, the writes and COMMIT take one round trip and the organization's lock
(which every claim of the organization waits for) is held only while the server works, never across a network
round trip. (It used to be two statements in the caller's transaction: four round trips with BEGIN and COMMIT, and
a third of a run's time in the worker. Sending them at once in psycopg's pipeline mode was measured too: it cost
more CPU than the round trips it saved.) Inside it:

1. ``SELECT … FOR UPDATE OF r FOR NO KEY UPDATE OF o``, with the schedule's row locked FOR NO KEY UPDATE in a
   lateral subquery: the run, its schedule and its organization are locked together. The schedule and
   organization locks are what serialize admissions of one schedule and of one organization, as
   ``admission_check`` does (which takes them in the same order, schedule first); FOR NO KEY UPDATE does not
   collide with the key-share locks that inserting runs takes, so the dispatcher's inserts never wait for a claim.
2. If the run is queued, one ``UPDATE`` moves it to ``running`` only if its schedule (if any) admits it without a
   decision (it allows overlap, or fewer than ``max_concurrency`` of its runs run and, for the buffered policies,
   no older run of it waits or is queued), the organization is below its limit and no run waits ahead of it
   (subqueries of its ``WHERE``), and, in data-modifying CTEs of the same statement, writes the ``run.started``
   event and the attempt row. It starts after statement 1 got its locks, so its snapshot sees every admission
   committed before (a VOLATILE function takes a new snapshot per statement under READ COMMITTED; a check in
   statement 1 itself would not: its snapshot is taken before it waits for the lock).

The function returns the run as statement 1 read it and whether statement 2 started it. When it did not and the
run is queued, the caller decides with ``admission_check`` on the ORM path (which skips, makes the run wait, or
cancels the oldest running run, as the policy says), in a transaction of its own that locks again.

**Finish** (succeeded): one call of ``echoflow_run_succeed`` (``runs/0011``), committed on its own, closes the
attempt, moves the run, writes ``run.succeeded`` and the schedule's last outcome. Both write exactly the rows and
values of the ORM path; tests compare them.

**Finish, then the next claim**: between two runs of one ``execute_runs`` message a pool process calls
``echoflow_run_succeed_then_claim`` (``runs/0011``): the finish and the claim of the next run in one statement,
one round trip and one commit instead of two of each. The claim takes the next run's schedule and run rows with
SKIP LOCKED there, so that a transaction holding a finished run's rows never waits for another's (the function's
comment says why that cannot deadlock); when one is busy the claim is made apart, after the commit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection

from runs import run_writes
from runs.models import Run, RunStatus

# The columns of the claimed run that the executor needs, in the order statement 1 returns them.
_RUN_COLUMNS = (
    "id",
    "status",
    "attempts",
    "organization_id",
    "schedule_id",
    "trigger",
    "slot",
    "due_at",
    "started_at",
    "priority",
    "max_attempts",
    "backoff_seconds",
    "timeout_seconds",
    "action_kind",
    "action_name",
    "action_config",
    "payload",
    "trace_id",
)
_JSON_COLUMNS = frozenset({"backoff_seconds", "action_config", "payload"})


@dataclass
class LockedRun:
    """Statement 1's row: the run (with only ``_RUN_COLUMNS`` loaded) and its organization's signing secret (the
    limits are read again by statement 2, after the locks)."""

    run: Run
    signing_secret: str


def available() -> bool:
    """PostgreSQL with psycopg 3 (server-side binding, prepared statements); Django also runs on psycopg 2."""
    if connection.vendor != "postgresql":
        return False
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    return bool(is_psycopg3)


# The claim: one call of the function that migrations runs/0008 and runs/0010 create (see the module docstring).
_CLAIM_SQL = "SELECT * FROM echoflow_run_claim(%s, %s, %s, %s)"


def _locked(row: tuple[Any, ...] | None) -> LockedRun | None:
    if row is None:
        return None
    values = dict(zip(_RUN_COLUMNS, row[: len(_RUN_COLUMNS)], strict=True))
    for name in _JSON_COLUMNS:
        if isinstance(values[name], str):  # Django's psycopg 3 setup loads jsonb as text
            values[name] = json.loads(values[name])
    # from_db takes the loaded values in the model's field order, and defers the fields not given.
    names = [f.attname for f in Run._meta.concrete_fields if f.attname in values]
    run = Run.from_db(connection.alias, names, [values[name] for name in names])
    return LockedRun(run, str(row[len(_RUN_COLUMNS)]))


def run_claim(run_id: int, *, worker: str, now: datetime, occurred_at: datetime) -> tuple[LockedRun | None, bool]:
    """Lock the run with its schedule and organization and start it if no decision is needed: one statement,
    which commits by itself when no transaction is open. Returns the run as it was before (None if it does not
    exist) and whether it was started; when it was not and the run is queued, the caller decides on the ORM path
    (``admission_check``), which locks again."""
    with run_writes.server_binding_cursor(prepared=True) as cursor:
        cursor.execute(_CLAIM_SQL, [run_id, worker, now, occurred_at])
        row = cursor.fetchone()
    return _claimed(row, worker=worker, now=now)


def _claimed(row: tuple[Any, ...] | None, *, worker: str, now: datetime) -> tuple[LockedRun | None, bool]:
    """The claim function's row (None: no such run) as ``run_claim`` returns it."""
    locked = _locked(None if row is None else row[:-1])
    if locked is None or row is None or not row[-1]:
        return locked, False
    run = locked.run
    run.status = RunStatus.RUNNING
    run.attempts += 1
    run.worker, run.heartbeat_at, run.next_attempt_at, run.report_by = worker, now, None, None
    if run.started_at is None:
        run.started_at = now
    return locked, True


# The finish: the function that migration runs/0011 creates (the statement this module used to send, unchanged).
_SUCCEED_SQL = "SELECT echoflow_run_succeed(%s, %s, %s::jsonb, %s, %s::jsonb, %s, %s)"

# The finish of one run and the claim of the next run of the batch, one statement (runs/0011's function).
_SUCCEED_THEN_CLAIM_SQL = (
    "SELECT * FROM echoflow_run_succeed_then_claim(%s, %s, %s::jsonb, %s, %s::jsonb, %s, %s, %s, %s, %s, %s)"
)


def _succeed_params(
    run: Run, number: int, output: Any, duration_ms: int, now: datetime, occurred_at: datetime
) -> list[Any]:
    return [
        run.pk,
        number,
        None if output is None else json.dumps(output),  # None is SQL NULL, as JSONField(null=True) stores it
        duration_ms,
        json.dumps({"status": RunStatus.SUCCEEDED.value, "duration_ms": duration_ms}),
        now,
        occurred_at,
    ]


def _succeeded(run: Run, output: Any, now: datetime) -> None:
    run.status = RunStatus.SUCCEEDED
    run.finished_at, run.output, run.error = now, output, ""


def run_succeed(run: Run, *, number: int, output: Any, duration_ms: int, now: datetime, occurred_at: datetime) -> bool:
    """Record attempt ``number`` of ``run`` as succeeded; False if the run was no longer running it (cancelled,
    reaped): then, as on the ORM path, only the attempt row is closed. One statement: outside a transaction it
    commits by itself."""
    with run_writes.server_binding_cursor(prepared=True) as cursor:
        cursor.execute(_SUCCEED_SQL, _succeed_params(run, number, output, duration_ms, now, occurred_at))
        (moved,) = cursor.fetchone()
    if moved:
        _succeeded(run, output, now)
    return bool(moved)


def run_succeed_then_claim(
    run: Run,
    *,
    number: int,
    output: Any,
    duration_ms: int,
    now: datetime,
    occurred_at: datetime,
    next_run_id: int,
    worker: str,
    next_now: datetime,
    next_occurred_at: datetime,
) -> tuple[bool, tuple[LockedRun | None, bool] | None]:
    """``run_succeed`` of ``run`` and ``run_claim`` of ``next_run_id`` in one statement, one transaction
    (runs/0011): what a pool process does between two runs of a batch. Returns whether ``run`` moved, then what
    ``run_claim`` would return for the next run, or None when the claim was not made here (the next run or its
    schedule was busy, or the run does not exist): the caller then calls ``run_claim``."""
    with run_writes.server_binding_cursor(prepared=True) as cursor:
        cursor.execute(
            _SUCCEED_THEN_CLAIM_SQL,
            [
                *_succeed_params(run, number, output, duration_ms, now, occurred_at),
                next_run_id,
                worker,
                next_now,
                next_occurred_at,
            ],
        )
        row = cursor.fetchone()
    moved, claim = bool(row[0]), tuple(row[1:])
    if moved:
        _succeeded(run, output, now)
    if claim[0] is None:
        return moved, None
    return moved, _claimed(claim, worker=worker, now=next_now)
