"""Measure the observability reads on a large history (the numbers are in docs/observability.md).

Run against a scratch PostgreSQL database only (its name must contain "bench"; everything in it is overwritten):

    createdb -h 127.0.0.1 -U postgres echoflow_bench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/echoflow_bench DEBUG=1 .venv/bin/python manage.py migrate
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/echoflow_bench DEBUG=1 .venv/bin/python manage.py shell \
        -c "from echoflow.observability.benchmark import benchmark; benchmark(runs=1_000_000)"

It writes ``runs`` finished runs of 1000 schedules spread over the last 24 hours, with their ``run.started`` and
outcome events in the outbox (two events per run), then times the event processor over all of them, the 24-hour
summaries, the per-schedule breakdown and a /metrics scrape, and prints the query plans of the summary reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import connection

from echoflow.accounts.models import Organization
from echoflow.accounts.services import organization_get_or_create
from echoflow.observability.metrics import metrics_exposition
from echoflow.observability.models import ORG_WIDE, MetricRollup, Resolution
from echoflow.observability.processor import events_process
from echoflow.observability.selectors import metrics_summary, metrics_summary_by_schedule
from runs.models import Run
from schedules.models import Schedule

SCHEDULES = 1000


def _timed(label: str, function: Callable[[], Any], repeat: int = 3) -> Any:
    best = float("inf")
    result: Any = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - started)
    print(f"{label:<58} {best * 1000:9.1f} ms")
    return result


def _explain(label: str, sql: str, params: list[Any]) -> None:
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
        plan = "\n    ".join(row[0] for row in cursor.fetchall())
    print(f"\n{label}:\n    {plan}")


def benchmark(*, runs: int = 1_000_000, write: bool = True) -> None:
    """``write=False`` keeps the history of an earlier call and continues processing where it stopped."""
    database = str(settings.DATABASES["default"]["NAME"])
    if connection.vendor != "postgresql" or "bench" not in database:
        raise SystemExit("refusing: run this against a scratch PostgreSQL database whose name contains 'bench'")
    org = organization_get_or_create(name="Bench", slug="bench")
    if write:
        _write_history(org.pk, runs)
    first = Schedule.objects.filter(organization=org).order_by("pk").values_list("pk", flat=True).first() or 0
    _measure(org, first)


def _write_history(org_id: int, runs: int) -> None:
    with connection.cursor() as cursor:
        for table in ("runs_runattempt", "runs_run", "events_outboxevent", "observability_metricrollup"):
            cursor.execute(f"TRUNCATE {table} CASCADE")
        cursor.execute("DELETE FROM observability_eventcursor")
        cursor.execute("DELETE FROM schedules_schedule WHERE organization_id = %s", [org_id])
    Schedule.objects.bulk_create(
        Schedule(organization_id=org_id, name=f"bench {i}", trigger_kind="cron", cron="* * * * *", state="paused")
        for i in range(SCHEDULES)
    )
    first = Schedule.objects.filter(organization_id=org_id).order_by("pk").values_list("pk", flat=True).first() or 0

    started = time.perf_counter()
    with connection.cursor() as cursor:
        # Finished runs, one per 86400/runs seconds over the last 24 hours, round-robin over the schedules.
        given = {
            "organization_id": "%(org)s",
            "schedule_id": "%(first)s + (n %% %(schedules)s)",
            "idempotency_key": "'bench:' || n",
            "trigger": "'schedule'",
            "slot": "t",
            "due_at": "t",
            "status": "CASE WHEN n %% 50 = 0 THEN 'timed_out' WHEN n %% 12 = 0 THEN 'failed' ELSE 'succeeded' END",
            "attempts": "1",
            "max_attempts": "1",
            "created_at": "t",
            "started_at": "t",
            "finished_at": "t",
            "worker": "'bench'",
        }
        params: dict[str, Any] = {"org": org_id, "first": first, "schedules": SCHEDULES, "runs": runs}
        for field in Run._meta.concrete_fields:  # every other NOT NULL column gets the model's default
            column = str(field.column)
            if field.primary_key or column in given or field.null:
                continue
            params[f"d_{column}"] = field.get_db_prep_save(field.get_default(), connection)
            given[column] = f"%(d_{column})s"
        cursor.execute(
            f"INSERT INTO runs_run ({', '.join(given)}) SELECT {', '.join(given.values())} "
            "FROM (SELECT n, now() - make_interval(secs => 86400.0 * n / %(runs)s) AS t "
            "FROM generate_series(1, %(runs)s) AS n) AS slots",
            params,
        )
        # Their events: run.started (lag 0-2 s) and the outcome (duration 20 ms - 60 s), in time order.
        cursor.execute(
            """
            INSERT INTO events_outboxevent (event_id, type, occurred_at, organization_id, schedule_id, run_id,
                attempt, data, stream_id)
            SELECT gen_random_uuid(), e.type, r.created_at + o.offset_ms * interval '1 millisecond',
                r.organization_id, r.schedule_id, r.id, 1, e.data, ''
            FROM runs_run r
            CROSS JOIN LATERAL (VALUES
                (0, 'run.started', jsonb_build_object('lag_ms', (r.id * 7919) %% 2000, 'trigger', 'schedule')),
                (1, 'run.' || r.status, jsonb_build_object('duration_ms', 20 + (r.id * 104729) %% 60000))
            ) AS e(seq, type, data)
            CROSS JOIN LATERAL (SELECT (e.seq * (20 + (r.id * 104729) %% 60000)) AS offset_ms) AS o(offset_ms)
            WHERE r.organization_id = %(org)s
            ORDER BY r.created_at, e.seq
            """,
            {"org": org_id},
        )
        cursor.execute("VACUUM ANALYZE runs_run")
        cursor.execute("VACUUM ANALYZE events_outboxevent")
    print(f"wrote {runs} runs and {2 * runs} events in {time.perf_counter() - started:.1f} s")


def _measure(org: Organization, first: int) -> None:
    started = time.perf_counter()
    total = 0
    while True:
        result = events_process(batch_size=2000, max_batches=50)
        total += result.events
        if result.events == 0:
            break
        print(f"    processed {total} events, {total / (time.perf_counter() - started):,.0f} events/s", flush=True)
    elapsed = time.perf_counter() - started
    print(f"event processor: {total} events in {elapsed:.1f} s ({total / max(elapsed, 1e-9):,.0f} events/s)")
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE observability_metricrollup")
    print(f"rollup rows: {MetricRollup.objects.count()}")

    print()
    summary = _timed("metrics_summary(org, 24h)", lambda: metrics_summary(organization=org, window="24h"))
    print(f"    {summary.as_dict()}")
    _timed("metrics_summary(org, schedule, 24h)", lambda: metrics_summary(organization=org, schedule=first))
    _timed("metrics_summary(org, 7d) (hour rows)", lambda: metrics_summary(organization=org, window="7d"))
    by_schedule = _timed("metrics_summary_by_schedule(org, 24h)", lambda: metrics_summary_by_schedule(organization=org))
    print(f"    {len(by_schedule)} schedules")
    body = _timed("/metrics scrape (collector)", lambda: metrics_exposition()[0])
    print(f"    {len(body)} bytes")

    _explain(
        "org summary, 24 h (minute rows)",
        "SELECT * FROM observability_metricrollup WHERE resolution = %s AND organization_id = %s AND schedule_id = %s"
        " AND start >= now() - interval '24 hours' AND start <= now()",
        [Resolution.MINUTE, org.pk, ORG_WIDE],
    )
    _explain(
        "per-schedule breakdown, 24 h (hour rows)",
        "SELECT * FROM observability_metricrollup WHERE resolution = %s AND organization_id = %s"
        " AND start >= now() - interval '25 hours' AND start <= now() AND NOT schedule_id = %s",
        [Resolution.HOUR, org.pk, ORG_WIDE],
    )
    _explain(
        "runs in progress (the status index)",
        "SELECT organization_id, status, count(id) FROM runs_run"
        " WHERE status IN ('queued', 'waiting', 'running', 'retrying') GROUP BY 1, 2",
        [],
    )
