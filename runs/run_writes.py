"""Writing runs in bulk: what the dispatcher writes for one claimed batch of schedules, and backfill's inserts.

A batch's writes are its new runs (``ON CONFLICT DO NOTHING`` on the idempotency key: a slot some other
dispatcher already wrote is refused by the database), one ``run.queued`` outbox event per run really inserted,
and the schedules' new ``next_run_at``, state and counters — all in the caller's transaction.

On PostgreSQL that is two statements per batch, their text the same whatever its size: the runs and their events
in one ``INSERT … SELECT`` from ``unnest`` of a few arrays joined to the locked schedule rows (the run's copy of
the schedule's settings never travels through Python), and the schedules in one ``UPDATE … FROM unnest(…)``. They
run on a cursor that binds the arrays in binary on the server (``server_binding_cursor``), as does the claim
query (``rows_fetch``). Elsewhere (SQLite, the embedded default) the portable ORM path does the same with ``Run``
objects, ``runs_insert``, ``events_record`` and ``bulk_update``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from django.db import connection
from django.db.backends.utils import CursorWrapper
from django.db.models import Field, Model, QuerySet
from django.utils import timezone

from echoflow.events.bus import EventSpec, events_record
from echoflow.events.models import OutboxEvent
from runs.models import Run, RunStatus
from schedules.models import Schedule
from schedules.planning import DueSchedule

# What the dispatcher writes back to a claimed schedule.
PLAN_FIELDS = ("next_run_at", "state", "state_note", "runs_count", "missed_count")


@dataclass(frozen=True)
class PlannedRun:
    schedule: DueSchedule
    slot: datetime
    due_at: datetime
    trigger: str
    round_index: int | None


@dataclass(frozen=True)
class NewRun:
    """A run this batch really inserted; ``marked_sent``: its send is recorded, the caller publishes it."""

    id: int
    schedule_id: int
    priority: int
    marked_sent: bool


def scheduled_run_key(schedule_id: int, slot: datetime) -> str:
    return f"s{schedule_id}:{_slot_text(slot)}"


@lru_cache(maxsize=4096)
def _slot_text(slot: datetime) -> str:
    # Cached: the schedules of a batch mostly share their slot, and strftime was a tenth of a batch's Python.
    return slot.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def run_from_schedule(
    schedule: Schedule,
    *,
    slot: datetime | None,
    due_at: datetime,
    trigger: str,
    now: datetime,
    round_index: int | None,
    idempotency_key: str | None = None,
) -> Run:
    """A new queued run with the schedule's settings; its key is the slot's unless another is given (a run
    outside the slots: run now)."""
    if idempotency_key is None:
        assert slot is not None, "a run outside the slots needs its own idempotency key"
        idempotency_key = scheduled_run_key(schedule.pk, slot)
    return Run(
        organization_id=schedule.organization_id,
        schedule=schedule,
        agent=schedule.agent,
        idempotency_key=idempotency_key,
        trigger=trigger,
        slot=slot,
        due_at=due_at,
        status=RunStatus.QUEUED,
        max_attempts=schedule.max_attempts,
        backoff_seconds=schedule.backoff_seconds,
        timeout_seconds=schedule.timeout_seconds,
        priority=schedule.priority,
        round_index=round_index,
        action_kind=schedule.action_kind,
        action_name=schedule.action_name,
        action_config=schedule.action_config,
        payload=schedule.payload,
        created_at=now,
        trace_id=Run.new_trace_id(),
    )


def runs_insert(runs: list[Run]) -> list[Run]:
    """INSERT … ON CONFLICT (idempotency_key) DO NOTHING RETURNING id: returns the runs that are new.

    Django's bulk_create(ignore_conflicts=True) cannot tell which rows were inserted; the dispatcher must know,
    to write exactly one ``run.queued`` event per new run. PostgreSQL and SQLite >= 3.35 share this syntax.
    """
    if not runs:
        return []
    fields = [f for f in Run._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(connection.ops.quote_name(f.column or f.attname) for f in fields)
    row_sql = "(" + ", ".join(["%s"] * len(fields)) + ")"
    by_key = {r.idempotency_key: r for r in runs}
    inserted: list[Run] = []
    table = connection.ops.quote_name(Run._meta.db_table)
    chunk = max(1, 30000 // len(fields))
    with connection.cursor() as cursor:
        for start in range(0, len(runs), chunk):
            part = runs[start : start + chunk]
            params: list[Any] = []
            for run in part:
                params.extend(f.get_db_prep_save(getattr(run, f.attname), connection) for f in fields)
            cursor.execute(
                f"INSERT INTO {table} ({columns}) VALUES {', '.join([row_sql] * len(part))} "
                "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id, idempotency_key",
                params,
            )
            for pk, key in cursor.fetchall():
                run = by_key[key]
                run.pk = pk
                inserted.append(run)
    return inserted


def planned_runs_insert(planned: Sequence[PlannedRun], *, now: datetime, resend_at: datetime) -> list[NewRun]:
    """Insert the planned runs with their ``run.queued`` events; returns the runs really inserted.

    Runs already due are written as sent (``enqueued_at`` = now, ``sends`` = 1, ``resend_at``), as
    ``_claim_for_sending`` would mark them a moment later: the caller publishes them right after the commit, and
    if it cannot, clears the mark (or, if it dies first, the resend path sends them at ``resend_at``). Runs whose
    jitter puts them later stay unsent until the tick when they are due.
    """
    if not planned:
        return []
    if connection.vendor == "postgresql":
        return _insert_postgresql(planned, now=now, resend_at=resend_at)
    return _insert_orm(planned, now=now, resend_at=resend_at)


def schedules_save_plan(schedules: Sequence[DueSchedule]) -> None:
    """Write each schedule's ``PLAN_FIELDS`` as planned in memory (the rows are locked by the caller)."""
    if not schedules:
        return
    if connection.vendor != "postgresql":
        rows = [Schedule(pk=s.id, **{name: getattr(s, name) for name in PLAN_FIELDS}) for s in schedules]
        Schedule.objects.bulk_update(rows, list(PLAN_FIELDS), batch_size=1000)
        return
    # One UPDATE … FROM unnest(arrays): bulk_update's CASE WHEN id = … per field per row was most of a batch's
    # time (building the expression in Python, then planning it in PostgreSQL).
    table = connection.ops.quote_name(Schedule._meta.db_table)
    fields = [_field(Schedule, name) for name in PLAN_FIELDS]
    assignments = ", ".join(f"{_quoted(f)} = v.{_quoted(f)}" for f in fields)
    arrays = ", ".join(f"%b::{_array_type(f)}" for f in [_field(Schedule, "id"), *fields])
    names = ", ".join(["id", *(_quoted(f) for f in fields)])
    ids = [s.pk for s in schedules]
    params = [ids, *([getattr(s, f.attname) for s in schedules] for f in fields), ids]
    # "s.id = ANY(ids)" besides the join: the rows are found through the primary key, not by hashing the whole
    # table (which the planner prefers while the table is small, and which grows with it).
    with server_binding_cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} AS s SET {assignments} FROM unnest({arrays}) AS v({names}) "
            "WHERE s.id = v.id AND s.id = ANY(%b::bigint[])",
            params,
        )


def _field(model: type[Model], name: str) -> Field[Any, Any]:
    field = model._meta.get_field(name)
    assert isinstance(field, Field), name
    return field


def rows_fetch(query: QuerySet[Any, Any]) -> list[tuple[Any, ...]]:
    """The rows of a ``values_list`` query; on PostgreSQL read in binary (the dispatcher's claim of due schedules).

    Django registers a Python text loader for timestamptz, which made parsing the claimed rows' timestamps a
    sixth of a dispatcher's CPU; psycopg's binary loaders are C. The query must need no value converters
    (no JSON or other converted fields): the rows are returned as the database sends them.
    """
    if connection.vendor != "postgresql":
        return list(query)
    sql, params = query.query.sql_with_params()
    with server_binding_cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def server_binding_cursor(*, prepared: bool = False) -> CursorWrapper:
    """A cursor that sends parameters apart from the statement (PostgreSQL with psycopg 3).

    Django's psycopg cursors bind on the client: each array of a batch would be quoted into the SQL text value by
    value, in Python, which cost more than the rest of the statement. Server-side binding hands the arrays to
    psycopg's C dumpers. ``prepared``: the cursor of the executor's hot statements (``runs.attempt_writes``),
    which psycopg prepares once a connection has run one ``prepare_threshold`` times (5 by default; set it to
    none in ``DATABASE_URL`` behind a PgBouncer older than 1.21 in transaction mode): their planning cost more
    than running them.
    """
    cursor_class = _server_binding_cursor_class(prepared)
    if cursor_class is None:  # psycopg2: client-side binding only
        return connection.cursor()
    connection.ensure_connection()
    connection.validate_thread_sharing()
    raw = cursor_class(connection.connection)
    return connection.make_debug_cursor(raw) if connection.queries_logged else connection.make_cursor(raw)


@lru_cache(maxsize=2)
def _server_binding_cursor_class(prepared: bool) -> Any:
    try:
        from django.db.backends.postgresql import base
    except ImportError:
        return None
    server_binding: Any = getattr(base, "ServerBindingCursor", None)  # only with psycopg 3
    if server_binding is None:
        return None
    if prepared:
        return server_binding

    class BatchCursor(server_binding):
        """Parameters in binary (psycopg's text dumper formats a list of datetimes in Python, 15 times slower), and
        never a named prepared statement: each batch statement runs a few times a second at most, and planning
        it costs little next to running it."""

        def execute(self, query: Any, params: Any = None, *, prepare: bool | None = None, binary: Any = None) -> Any:
            return super().execute(query, params, prepare=False, binary=True)

    return BatchCursor


def _quoted(field: Field[Any, Any]) -> str:
    return connection.ops.quote_name(field.column or field.attname)


def _array_type(field: Field[Any, Any]) -> str:
    db_type = field.db_type(connection)
    # unnest of varchar(n)[] works, but text[] is the same thing without the length check twice.
    return "text[]" if db_type is None or db_type.startswith("varchar") else f"{db_type}[]"


def _insert_orm(planned: Sequence[PlannedRun], *, now: datetime, resend_at: datetime) -> list[NewRun]:
    # The whole rows, to copy each run's settings from (this path serves the embedded default: small batches).
    full = Schedule.objects.in_bulk({plan.schedule.pk for plan in planned})
    runs = []
    for plan in planned:
        run = run_from_schedule(
            full[plan.schedule.pk],
            slot=plan.slot,
            due_at=plan.due_at,
            trigger=plan.trigger,
            now=now,
            round_index=plan.round_index,
        )
        if run.due_at <= now:
            run.enqueued_at, run.sends, run.resend_at = now, 1, resend_at
        runs.append(run)
    inserted = runs_insert(runs)
    events_record(
        EventSpec(
            type="run.queued",
            organization_id=r.organization_id,
            schedule_id=r.schedule_id,
            run_id=r.pk,
            attempt=0,
            data={"status": RunStatus.QUEUED, "slot": r.slot.isoformat() if r.slot else None},
        )
        for r in inserted
    )
    return [NewRun(r.pk, r.schedule_id or 0, r.priority, r.enqueued_at is not None) for r in inserted]


# Run columns copied from the claimed schedule row, and the ones each planned run brings (as arrays).
_FROM_SCHEDULE = (
    "organization_id",
    "agent",
    "max_attempts",
    "backoff_seconds",
    "timeout_seconds",
    "priority",
    "action_kind",
    "action_name",
    "action_config",
    "payload",
)
_FROM_PLAN = {
    "schedule_id": "bigint[]",
    "idempotency_key": "text[]",
    "trigger": "text[]",
    "slot": "timestamptz[]",
    "due_at": "timestamptz[]",
    "round_index": "integer[]",
}


# ins.slot as Python's isoformat() writes a UTC instant (what the ORM path puts in the event): seconds, then
# microseconds only when there are any, then +00:00.
SLOT_ISOFORMAT = (
    "to_char(slot AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS')"
    " || CASE WHEN mod(extract(microsecond FROM slot)::bigint, 1000000) = 0 THEN ''"
    " ELSE to_char(slot AT TIME ZONE 'UTC', '.US') END || '+00:00'"
)


@lru_cache(maxsize=1)
def _postgresql_insert() -> tuple[str, tuple[tuple[str, Field[Any, Any]], ...]]:
    """The batch's INSERT (runs, then their events), and the parameters that take a column's default.

    Every other column of runs_run gets the default a ``Run()`` would have (computed for each batch), so a field
    added to the model later is written correctly here too (or fails loudly, if it has no default and no rule).
    """
    quote = connection.ops.quote_name
    due = "v.due_at <= %(now)s"
    per_batch = {
        "status": "%(queued)s::text",
        "created_at": "%(now)s",
        "enqueued_at": f"CASE WHEN {due} THEN %(now)s END",
        "sends": f"CASE WHEN {due} THEN 1 ELSE 0 END",
        "resend_at": f"CASE WHEN {due} THEN %(resend_at)s END",
        # uuid4().hex, as Run.new_trace_id, made by the server.
        "trace_id": "replace(gen_random_uuid()::text, '-', '')",
    }
    columns, values = [], []
    defaults: list[tuple[str, Field[Any, Any]]] = []
    for field in Run._meta.concrete_fields:
        if field.primary_key:
            continue
        name = field.attname
        columns.append(quote(field.column or name))
        if name in _FROM_SCHEDULE:
            values.append(f"s.{_quoted(_field(Schedule, name))}")
        elif name in _FROM_PLAN:
            values.append(f"v.{name}")
        elif name in per_batch:
            values.append(per_batch[name])
        else:
            key = f"default_{name}"
            values.append(f"%({key})s::{field.db_type(connection)}")
            defaults.append((key, field))
    arrays = ", ".join(f"%({name})b::{kind}" for name, kind in _FROM_PLAN.items())
    runs_table = quote(Run._meta.db_table)
    schedules_table = quote(Schedule._meta.db_table)
    events_table = quote(OutboxEvent._meta.db_table)
    sql = f"""
        WITH v AS (SELECT * FROM unnest({arrays}) AS v({", ".join(_FROM_PLAN)})),
        ins AS (
            INSERT INTO {runs_table} ({", ".join(columns)})
            SELECT {", ".join(values)} FROM v JOIN {schedules_table} AS s ON s.id = v.schedule_id
            WHERE s.id = ANY(%(schedule_id)b::bigint[])  -- through the primary key, as in schedules_save_plan
            ON CONFLICT (idempotency_key) DO NOTHING
            RETURNING id, schedule_id, organization_id, priority, enqueued_at, slot
        ),
        events AS (
            INSERT INTO {events_table}
                (event_id, type, occurred_at, organization_id, schedule_id, run_id, attempt, data, stream_id)
            SELECT gen_random_uuid(), 'run.queued', %(occurred_at)s, organization_id, schedule_id, id,
                   0, jsonb_build_object('status', %(queued)s::text, 'slot', {SLOT_ISOFORMAT}), ''
            FROM ins
            ORDER BY id
        )
        SELECT id, schedule_id, priority, enqueued_at IS NOT NULL FROM ins
    """
    return sql, tuple(defaults)


def _insert_postgresql(planned: Sequence[PlannedRun], *, now: datetime, resend_at: datetime) -> list[NewRun]:
    sql, defaults = _postgresql_insert()
    params: dict[str, Any] = {
        **{key: field.get_db_prep_save(field.get_default(), connection) for key, field in defaults},
        "schedule_id": [p.schedule.pk for p in planned],
        "idempotency_key": [scheduled_run_key(p.schedule.pk, p.slot) for p in planned],
        "trigger": [p.trigger for p in planned],
        "slot": [p.slot for p in planned],
        "due_at": [p.due_at for p in planned],
        "round_index": [p.round_index for p in planned],
        "now": now,
        "resend_at": resend_at,
        "queued": RunStatus.QUEUED.value,
        "occurred_at": timezone.now(),
    }
    with server_binding_cursor() as cursor:
        cursor.execute(sql, params)
        return [NewRun(pk, schedule_id, priority, sent) for pk, schedule_id, priority, sent in cursor.fetchall()]
