"""The data of scenario 5 (api): organizations, schedules and runs shaped like a busy installation, by COPY.

One big organization holds 80 % of the schedules and 85 % of the runs; four small ones share the rest. Schedules
mix trigger kinds, states, labels, agents and priorities; runs are spread evenly over the last 30 days in
``created_at`` order (as a real table fills up), mostly scheduled runs of a few hot schedules and a long tail,
with final statuses except for the newest few hundred. Every started run has its attempt rows (the run detail
reads them). Rows get explicit ids (so runs can point at schedules without a lookup); the sequences are moved
past them afterwards.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection, models
from django.utils import timezone
from psycopg.types.json import Jsonb

from echoflow.accounts.models import Organization
from echoflow.accounts.services import membership_set, organization_get_or_create, token_create
from runs.models import Run
from schedules.models import Schedule

TEAMS = ("payments", "billing", "search", "growth", "platform", "data", "mobile", "infra", "support", "security")
ENVS = ("prod", "staging", "dev")
VERBS = ("sync", "export", "rebuild", "notify", "cleanup", "report", "import", "refresh")
NOUNS = ("invoices", "customers", "orders", "index", "metrics", "backups", "emails", "ledger")
AGENTS = tuple(f"agent-{k:02d}" for k in range(50))
CRONS = ("0 * * * *", "*/5 * * * *", "30 8 * * 1-5", "0 0 * * *", "15 3 * * 0", "0 0 1 * *")
INTERVALS = (60, 300, 900, 3600, 86400)
ZONES = ("UTC", "Europe/London", "America/New_York", "Asia/Shanghai")
SMALL_ORGS = 4
BIG_SHARE_SCHEDULES = 16  # of every 20 schedules
BIG_SHARE_RUNS = 0.85
HISTORY = timedelta(days=30)
IN_PROGRESS = 400  # the newest runs are not finished yet


@dataclass(frozen=True)
class ApiData:
    """What the requests need: the big organization, a token in it, and values its data is known to hold."""

    org: Organization
    token: str
    schedules: int
    runs: int
    hot_schedule: int  # the schedule with the most runs
    typical_schedule: int  # a schedule with a median number of runs
    run_with_attempts: int
    attempts: int
    phases: dict[str, float]  # seconds each step of the generation took


def _columns(model: type[models.Model]) -> list[models.Field[Any, Any]]:
    return [f for f in model._meta.concrete_fields if f.column]


def _copy(model: type[models.Model], rows: Iterator[Sequence[Any]]) -> None:
    """COPY rows (a value for every column, in the model's field order) into the model's table."""
    columns = ", ".join(connection.ops.quote_name(str(f.column)) for f in _columns(model))
    table = connection.ops.quote_name(model._meta.db_table)
    with connection.cursor() as cursor, cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


@contextmanager
def _indexes_built_after(table: str) -> Iterator[None]:
    """Drop the table's secondary indexes and foreign keys for a bulk load, then build them once, sorted.

    Keeping 10 B-trees and two foreign-key checks per row up to date while 1M rows arrive takes minutes; building
    them afterwards takes seconds. The primary key and unique constraints stay (they also guard the data)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "WHERE i.indrelid = %s::regclass "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint c "
            "WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid)",
            [table],
        )
        indexes = cursor.fetchall()
        cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = %s::regclass AND contype = 'f'",
            [table],
        )
        foreign_keys = cursor.fetchall()
        for name, _ in foreign_keys:
            cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        for name, _ in indexes:
            cursor.execute(f"DROP INDEX {name}")
    yield
    with connection.cursor() as cursor:
        cursor.execute("SET maintenance_work_mem = '256MB'")
        for _, definition in indexes:
            cursor.execute(definition)
        for name, definition in foreign_keys:
            cursor.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
        cursor.execute("RESET maintenance_work_mem")


def _template(model: type[models.Model], instance: models.Model) -> tuple[list[str], list[Any]]:
    """Every column of ``instance`` prepared for the database once: rows only replace the values that vary."""
    names = [str(f.attname) for f in _columns(model)]
    values = [f.get_db_prep_save(getattr(instance, f.attname), connection) for f in _columns(model)]
    # JSON as text, serialized once (COPY parses it into jsonb): psycopg's Jsonb would serialize it on every row.
    return names, [json.dumps(v.obj) if isinstance(v, Jsonb) else v for v in values]


def _orgs() -> list[Organization]:
    big = organization_get_or_create(name="Bench", slug="bench")
    return [big, *(organization_get_or_create(name=f"Small {k}", slug=f"small-{k}") for k in range(SMALL_ORGS))]


def _schedule_rows(
    count: int, orgs: list[Organization], now: datetime, owners: list[list[int]], agents: dict[int, str]
) -> Iterator[list[Any]]:
    names, base = _template(
        Schedule,
        Schedule(organization=orgs[0], name="", trigger_kind="cron", cron="0 * * * *", action_kind="python",
                 action_name="echoflow.noop", created_at=now, updated_at=now),
    )  # fmt: skip
    at = {name: index for index, name in enumerate(names)}
    rng = random.Random(5)
    for i in range(count):
        pk = i + 1
        slot = i % 20
        org_index = 0 if slot < BIG_SHARE_SCHEDULES else 1 + (slot - BIG_SHARE_SCHEDULES) % SMALL_ORGS
        owners[org_index].append(pk)
        # Every attribute drawn on its own: a filter on one says nothing about the name order or another filter.
        team, verb, noun = rng.choice(TEAMS), rng.choice(VERBS), rng.choice(NOUNS)
        kind_pick, state_pick = rng.random(), rng.random()
        kind = "cron" if kind_pick < 0.6 else "interval" if kind_pick < 0.9 else "once"
        if kind == "once":
            state = "completed" if state_pick < 0.7 else "active"
        else:
            state = "active" if state_pick < 0.8 else "paused" if state_pick < 0.97 else "cancelled"
        created = now - timedelta(days=365 * rng.random())
        labels: dict[str, str] = {"team": team, "env": rng.choice(ENVS)}
        if rng.random() < 0.05:
            labels["tier"] = "critical"
        row = list(base)
        row[at["id"]] = pk
        row[at["organization_id"]] = orgs[org_index].pk
        row[at["name"]] = f"{verb}-{noun}-{team}-{pk:06d}"
        row[at["description"]] = f"{verb.capitalize()} the {noun} of {team}" if rng.random() < 0.7 else ""
        row[at["agent"]] = agents[pk] = "" if rng.random() < 0.1 else rng.choice(AGENTS)
        row[at["labels"]] = json.dumps(labels)
        row[at["trigger_kind"]] = kind
        row[at["cron"]] = rng.choice(CRONS) if kind == "cron" else ""
        row[at["interval_seconds"]] = rng.choice(INTERVALS) if kind == "interval" else None
        row[at["run_at"]] = created + timedelta(days=1) if kind == "once" else None
        row[at["timezone"]] = rng.choice(ZONES)
        row[at["priority"]] = rng.randrange(10)
        row[at["state"]] = state
        row[at["next_run_at"]] = now + timedelta(seconds=rng.randrange(86400)) if state == "active" else None
        row[at["created_at"]] = created
        row[at["updated_at"]] = created + (now - created) * rng.random()
        yield row


def _status(rng: random.Random, in_progress: bool) -> tuple[str, int]:
    """A run's status and its number of attempts."""
    if in_progress:
        return rng.choice((("queued", 0), ("waiting", 0), ("running", 1), ("retrying", 1)))
    pick = rng.random()
    if pick < 0.86:
        return "succeeded", 1
    if pick < 0.94:
        return "failed", 3
    if pick < 0.96:
        return "timed_out", 1
    if pick < 0.97:
        return "cancelled", 1
    return "skipped", 0


def _trigger(pick: float) -> str:
    if pick < 0.90:
        return "schedule"
    if pick < 0.91:
        return "catchup"
    if pick < 0.94:
        return "backfill"
    if pick < 0.97:
        return "manual"
    return "api"


def _run_rows(
    count: int, orgs: list[Organization], now: datetime, owners: list[list[int]], agents: dict[int, str]
) -> Iterator[list[Any]]:
    names, base = _template(
        Run,
        Run(organization=orgs[0], idempotency_key="", due_at=now, action_kind="python", action_name="echoflow.noop",
            created_at=now, max_attempts=3, worker=""),
    )  # fmt: skip
    at = {name: index for index, name in enumerate(names)}
    rng = random.Random(7)
    start = now - HISTORY
    step = HISTORY / max(count, 1)
    for i in range(count):
        pk = i + 1
        created = start + step * i
        org_index = 0 if rng.random() < BIG_SHARE_RUNS else 1 + rng.randrange(SMALL_ORGS)
        trigger = _trigger(rng.random())
        # A few hot schedules (every minute) and a long tail (daily): u² puts 10 % of the runs on 1 % of them.
        mine = owners[org_index]
        schedule = None if trigger == "api" else mine[int(len(mine) * rng.random() ** 2)]
        status, attempts = _status(rng, in_progress=i >= count - IN_PROGRESS)
        started = created + timedelta(milliseconds=200 + rng.randrange(800)) if attempts else None
        row = list(base)
        row[at["id"]] = pk
        row[at["organization_id"]] = orgs[org_index].pk
        row[at["schedule_id"]] = schedule
        row[at["agent"]] = agents[schedule] if schedule is not None else ""  # as the dispatcher copies it
        row[at["idempotency_key"]] = f"bench:{pk:09d}"  # in key order: the unique index only appends
        row[at["trigger"]] = trigger
        row[at["slot"]] = created if schedule is not None else None
        row[at["due_at"]] = created
        row[at["status"]] = status
        row[at["attempts"]] = attempts
        row[at["priority"]] = pk % 10
        row[at["created_at"]] = created
        row[at["enqueued_at"]] = created if attempts else None
        row[at["started_at"]] = started
        if started is not None and status not in ("running", "retrying"):
            row[at["finished_at"]] = started + timedelta(milliseconds=20 + rng.randrange(60_000))
        row[at["error"]] = "TimeoutError: the endpoint did not answer in 30 s" if status == "failed" else ""
        row[at["worker"]] = f"celery@worker-{pk % 4}" if attempts else ""
        yield row


def _attempts() -> int:
    """One attempt per try of every started run, written by the server from the runs (a bulk INSERT)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO runs_runattempt (run_id, number, started_at, finished_at, outcome, error, output, worker,
                                         duration_ms)
            SELECT r.id, n.number, r.started_at, r.finished_at,
                   CASE WHEN n.number < r.attempts OR r.status = 'retrying' THEN 'failed'
                        WHEN r.status IN ('succeeded', 'failed', 'timed_out', 'cancelled', 'running') THEN r.status
                        ELSE 'lost' END,
                   CASE WHEN n.number < r.attempts THEN 'TimeoutError: the endpoint did not answer in 30 s'
                        ELSE r.error END,
                   NULL, r.worker,
                   (extract(epoch FROM r.finished_at - r.started_at) * 1000)::integer
            FROM runs_run r CROSS JOIN LATERAL generate_series(1, r.attempts) AS n(number)
            WHERE r.started_at IS NOT NULL
            """
        )
        return int(cursor.rowcount)


def _move_sequences() -> None:
    with connection.cursor() as cursor:
        for table in ("schedules_schedule", "runs_run"):
            cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")


def _probe(org: Organization) -> tuple[int, int, int]:
    """The hot schedule, a median one, and a run with three attempts, all in the big organization."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT schedule_id, count(*) FROM runs_run WHERE organization_id = %s AND schedule_id IS NOT NULL "
            "GROUP BY schedule_id ORDER BY 2 DESC",
            [org.pk],
        )
        counts = cursor.fetchall()
        cursor.execute(
            "SELECT id FROM runs_run WHERE organization_id = %s AND attempts = 3 ORDER BY id DESC LIMIT 1", [org.pk]
        )
        run = cursor.fetchone()
    return int(counts[0][0]), int(counts[len(counts) // 2][0]), int(run[0]) if run else 1


def api_data_generate(*, schedules: int, runs: int) -> ApiData:
    """Write the scenario's data into empty tables; returns what the requests need."""
    phases: dict[str, float] = {}
    clock = time.monotonic()

    def done(phase: str) -> None:
        nonlocal clock
        phases[phase] = time.monotonic() - clock
        clock = time.monotonic()

    orgs = _orgs()
    user = get_user_model().objects.create_user("bench-api", email="bench-api@example.com")
    membership_set(organization=orgs[0], user=user, role="viewer")
    _, plaintext = token_create(user=user, organization=orgs[0], name="bench-api")
    now = timezone.now()
    owners: list[list[int]] = [[] for _ in orgs]
    agents: dict[int, str] = {}
    with _indexes_built_after("schedules_schedule"):
        _copy(Schedule, _schedule_rows(schedules, orgs, now, owners, agents))
        done("schedules COPY")
    done("schedules indexes")
    with _indexes_built_after("runs_run"):
        _copy(Run, _run_rows(runs, orgs, now, owners, agents))
        done("runs COPY")
    _move_sequences()
    done("runs indexes")
    with _indexes_built_after("runs_runattempt"):
        attempts = _attempts()
        done("attempts INSERT")
    done("attempts indexes")
    with connection.cursor() as cursor:
        for table in ("schedules_schedule", "runs_run", "runs_runattempt"):
            cursor.execute(f"VACUUM ANALYZE {table}")
    done("VACUUM ANALYZE")
    hot, typical, run = _probe(orgs[0])
    return ApiData(
        org=orgs[0], token=plaintext, schedules=schedules, runs=runs, hot_schedule=hot, typical_schedule=typical,
        run_with_attempts=run, attempts=attempts, phases=phases,
    )  # fmt: skip
