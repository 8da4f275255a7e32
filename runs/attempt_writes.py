"""The executor's writes on PostgreSQL in as few statements as the guarantees allow: claiming a queued run and
recording a successful attempt. Every other case (SQLite, an overlap policy to apply, a run that must wait, a
failed, cancelled or timed-out attempt) takes the portable ORM path in ``runs.executor`` and ``runs.limits``.

A no-op run through the ORM path cost about 14 statements and 13 ms of the worker's CPU, most of it Django building
queries (``docs/benchmarks.md`` §4); here it is three statements to claim and one to finish, written by hand.

**Claim** (inside the caller's transaction):

1. ``SELECT … FOR UPDATE OF r FOR NO KEY UPDATE OF o``: the run and its organization's row are locked together,
   and the schedule's overlap policy is read (not locked). The organization lock is what serializes admissions
   of one organization, as ``admission_check`` does; FOR NO KEY UPDATE does not collide with the key-share locks
   that inserting runs takes, so the dispatcher's inserts never wait for a claim.
2. For a run without a schedule or whose schedule allows overlap: one statement moves the run to ``running`` only
   if the organization is below its limit and no run waits ahead of it (the two checks are subqueries of the
   ``UPDATE``'s ``WHERE``), and, in data-modifying CTEs of the same statement, writes the ``run.started`` event and
   the attempt row. The statement starts after statement 1 got its locks, so its snapshot sees every admission
   committed before (under READ COMMITTED each statement takes a new snapshot; a check in statement 1 itself
   would not: its snapshot is taken before it waits for the lock).
   When it moves nothing, the caller falls back to ``admission_check``, which decides (and words) the wait.

**Finish** (succeeded): one statement closes the attempt, moves the run, writes ``run.succeeded`` and the
schedule's last outcome. Both statements write exactly the rows and values of the ORM path; tests compare them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from django.db import connection

from echoflow.accounts.models import Organization
from echoflow.events.models import OutboxEvent
from runs.models import AttemptOutcome, Run, RunAttempt, RunStatus
from schedules.models import OverlapPolicy, Schedule

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
    """Statement 1's row: the run (with only ``_RUN_COLUMNS`` loaded), its organization's limit and secret, and
    the overlap policy of its schedule (None without one)."""

    run: Run
    max_concurrent_runs: int
    signing_secret: str
    overlap_policy: str | None

    @property
    def needs_schedule_admission(self) -> bool:
        return self.overlap_policy is not None and self.overlap_policy != OverlapPolicy.ALLOW_ALL


def available() -> bool:
    return connection.vendor == "postgresql"


def _table(model: Any) -> str:
    return str(connection.ops.quote_name(model._meta.db_table))


@lru_cache(maxsize=1)
def _lock_sql() -> str:
    columns = ", ".join(f"r.{connection.ops.quote_name(name)}" for name in _RUN_COLUMNS)
    return (
        f"SELECT {columns}, o.max_concurrent_runs, o.signing_secret, s.overlap_policy "
        f"FROM {_table(Run)} AS r JOIN {_table(Organization)} AS o ON o.id = r.organization_id "
        f"LEFT JOIN {_table(Schedule)} AS s ON s.id = r.schedule_id "
        "WHERE r.id = %s FOR UPDATE OF r FOR NO KEY UPDATE OF o"
    )


def run_lock(run_id: int) -> LockedRun | None:
    """Statement 1: lock the run and its organization; None if the run does not exist."""
    with connection.cursor() as cursor:
        cursor.execute(_lock_sql(), [run_id])
        row = cursor.fetchone()
    if row is None:
        return None
    values = dict(zip(_RUN_COLUMNS, row[: len(_RUN_COLUMNS)], strict=True))
    for name in _JSON_COLUMNS:
        if isinstance(values[name], str):  # Django's psycopg 3 setup loads jsonb as text
            values[name] = json.loads(values[name])
    # from_db takes the loaded values in the model's field order, and defers the fields not given.
    names = [f.attname for f in Run._meta.concrete_fields if f.attname in values]
    run = Run.from_db(connection.alias, names, [values[name] for name in names])
    max_concurrent_runs, signing_secret, overlap_policy = row[len(_RUN_COLUMNS) :]
    return LockedRun(run, int(max_concurrent_runs), str(signing_secret), overlap_policy)


@lru_cache(maxsize=1)
def _start_sql() -> str:
    runs, events, attempts = _table(Run), _table(OutboxEvent), _table(RunAttempt)
    return f"""
        WITH claimed AS (
            UPDATE {runs}
            SET status = %(running)s, attempts = attempts + 1, worker = %(worker)s, heartbeat_at = %(now)s,
                next_attempt_at = NULL, report_by = NULL, started_at = COALESCE(started_at, %(now)s)
            WHERE id = %(id)s AND status = %(queued)s AND attempts = %(attempts)s
              AND (SELECT count(*) FROM {runs} WHERE organization_id = %(org)s AND status = %(running)s)
                  < %(max_concurrent_runs)s
              AND NOT EXISTS (
                  SELECT 1 FROM {runs}
                  WHERE organization_id = %(org)s AND status = %(waiting)s AND waiting_for = %(wait_org)s
                    AND (priority > %(priority)s OR (priority = %(priority)s AND id < %(id)s))
              )
            RETURNING id, organization_id, schedule_id, attempts
        ),
        event AS (
            INSERT INTO {events}
                (event_id, type, occurred_at, organization_id, schedule_id, run_id, attempt, data, stream_id)
            SELECT gen_random_uuid(), 'run.started', %(occurred_at)s, organization_id, schedule_id, id, attempts,
                   %(data)s::jsonb, ''
            FROM claimed
        ),
        attempt AS (
            INSERT INTO {attempts} (run_id, number, started_at, finished_at, outcome, error, output, worker, duration_ms)
            SELECT id, attempts, %(now)s, NULL, %(attempt_running)s, '', NULL, %(worker)s, NULL FROM claimed
        )
        SELECT count(*) FROM claimed
    """


def run_start(locked: LockedRun, *, worker: str, now: datetime, occurred_at: datetime, data: dict[str, Any]) -> bool:
    """Statement 2: start the locked run if the organization's limit admits it; False when it does not (the run
    stays queued and the caller decides with ``admission_check``)."""
    from runs.limits import WAIT_ORGANIZATION

    run = locked.run
    with connection.cursor() as cursor:
        cursor.execute(
            _start_sql(),
            {
                "id": run.pk,
                "org": run.organization_id,
                "attempts": run.attempts,
                "priority": run.priority,
                "max_concurrent_runs": locked.max_concurrent_runs,
                "worker": worker,
                "now": now,
                "occurred_at": occurred_at,
                "data": json.dumps({"status": RunStatus.RUNNING.value, **data}),
                "running": RunStatus.RUNNING.value,
                "queued": RunStatus.QUEUED.value,
                "waiting": RunStatus.WAITING.value,
                "wait_org": WAIT_ORGANIZATION,
                "attempt_running": AttemptOutcome.RUNNING.value,
            },
        )
        (count,) = cursor.fetchone()
    if not count:
        return False
    run.status = RunStatus.RUNNING
    run.attempts += 1
    run.worker, run.heartbeat_at, run.next_attempt_at, run.report_by = worker, now, None, None
    if run.started_at is None:
        run.started_at = now
    return True


@lru_cache(maxsize=1)
def _succeed_sql() -> str:
    runs, events, attempts, schedules = _table(Run), _table(OutboxEvent), _table(RunAttempt), _table(Schedule)
    return f"""
        WITH attempt AS (
            UPDATE {attempts}
            SET finished_at = %(now)s, outcome = %(succeeded)s, error = '', output = %(output)s::jsonb,
                duration_ms = %(duration_ms)s
            WHERE run_id = %(id)s AND number = %(number)s AND outcome = %(attempt_running)s
        ),
        moved AS (
            UPDATE {runs} SET status = %(succeeded)s, finished_at = %(now)s, output = %(output)s::jsonb, error = ''
            WHERE id = %(id)s AND status = %(running)s AND attempts = %(number)s
            RETURNING id, organization_id, schedule_id, attempts
        ),
        event AS (
            INSERT INTO {events}
                (event_id, type, occurred_at, organization_id, schedule_id, run_id, attempt, data, stream_id)
            SELECT gen_random_uuid(), 'run.succeeded', %(occurred_at)s, organization_id, schedule_id, id, attempts,
                   %(data)s::jsonb, ''
            FROM moved
        ),
        schedule AS (
            UPDATE {schedules} AS s
            SET last_run_at = %(now)s, last_run_status = %(succeeded)s, consecutive_failures = 0
            FROM moved WHERE s.id = moved.schedule_id
        )
        SELECT count(*) FROM moved
    """


def run_succeed(
    run: Run, *, number: int, output: Any, duration_ms: int, now: datetime, occurred_at: datetime
) -> bool:
    """Record attempt ``number`` of ``run`` as succeeded; False if the run was no longer running it (cancelled,
    reaped): then, as on the ORM path, only the attempt row is closed."""
    with connection.cursor() as cursor:
        cursor.execute(
            _succeed_sql(),
            {
                "id": run.pk,
                "number": number,
                "now": now,
                "occurred_at": occurred_at,
                # None is SQL NULL, as JSONField(null=True) stores it.
                "output": None if output is None else json.dumps(output),
                "duration_ms": duration_ms,
                "data": json.dumps({"status": RunStatus.SUCCEEDED.value, "duration_ms": duration_ms}),
                "succeeded": RunStatus.SUCCEEDED.value,
                "running": RunStatus.RUNNING.value,
                "attempt_running": AttemptOutcome.RUNNING.value,
            },
        )
        (count,) = cursor.fetchone()
    if not count:
        return False
    run.status = RunStatus.SUCCEEDED
    run.finished_at, run.output, run.error = now, output, ""
    return True
