"""Scenario 5 — api: p50/p95/p99 of the filtered schedule and run list endpoints on 100k schedules and 1M runs.

The data (bench.api_data) is written by COPY. The requests go over HTTP to a real gunicorn (one sync worker, the
production image's server) on 127.0.0.1, with a bearer token of the big organization, through the whole
middleware stack, throttling included; each takes a new TCP connection, as gunicorn's sync worker closes it.
Every case is requested ``warmup`` times, then ``requests`` times, one at a time.

Beside the times, each case is requested once in process (Django's test Client, same stack) to count its SQL
queries and EXPLAIN the ones that read runs, schedules or attempts: "index used" names the indexes those plans
read on runs and schedules and flags a sequential scan of either; "data SQL ms" is the median time of running
those queries again from Python, the database's share of a request (the rest is Django, DRF, JSON and, on a
shared machine, waiting for a core).

Comparison: the run list with DRF's LimitOffsetPagination (what ``DEFAULT_PAGINATION_CLASS`` gives most DRF
APIs), on the first page and at offset 25,000 (page 500), served by the same gunicorn under /bench/offset/runs/
(bench.api_urls): it counts the organization's runs on every page and reads and skips every row before the page.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext, override_settings
from django.utils import timezone

from bench.api_data import ApiData, api_data_generate
from bench.common import Children, percentile, print_table
from bench.data import truncate
from echoflow.private_redis import free_port

TARGET_P95_MS = 50.0
API = "/api/v1"
# The throttle still runs (a cache read and write per request), over a one-second window the bench never fills.
RATE_LIMIT = "100000/s"
DATA_TABLES = ('"runs_run"', '"schedules_schedule"', '"runs_runattempt"')
TABLES = ("runs_run", "schedules_schedule")


@dataclass(frozen=True)
class Case:
    label: str
    path: str = ""
    next_of: str = ""  # the path is the ``next`` link of this other case's answer


@dataclass(frozen=True)
class Inspection:
    """One request of a case, made in process: what it asked the database."""

    queries: int  # SQL queries of the whole request (authentication included)
    matching: int | None  # rows the page query's WHERE selects
    indexes: str  # of the plans of the queries that read runs, schedules or attempts
    sql_ms: float  # those queries alone, run again from Python: the database's share of a request


@dataclass
class Figures:
    case: Case
    path: str
    inspection: Inspection
    times_ms: list[float]


def _query(**params: Any) -> str:
    return "?" + urlencode(params, doseq=True) if params else ""


def cases(data: ApiData, schedule_name: str) -> list[Case]:
    now = timezone.now().replace(microsecond=0)
    day_ago_10, day_ago_9, week_ago = (now - timedelta(days=d) for d in (10, 9, 7))
    schedules, runs = f"{API}/schedules/", f"{API}/runs/"
    return [
        Case("schedules: default (by name)", schedules),
        Case("schedules: next page (cursor)", next_of="schedules: default (by name)"),
        Case("schedules: state=paused", schedules + _query(state="paused")),
        Case("schedules: label team=payments", schedules + _query(label="team=payments")),
        Case("schedules: label team=nobody (none)", schedules + _query(label="team=nobody")),
        Case("schedules: label tier (has key)", schedules + _query(label="tier")),
        Case("schedules: agent", schedules + _query(agent="agent-07")),
        Case("schedules: trigger_kind=once", schedules + _query(trigger_kind="once")),
        Case("schedules: state+kind+agent", schedules + _query(state="active", trigger_kind="cron", agent="agent-07")),
        Case("schedules: q=invoices (text)", schedules + _query(q="invoices")),
        Case("schedules: q=one name (text)", schedules + _query(q=schedule_name)),
        Case("schedules: ordering=-created_at", schedules + _query(ordering="-created_at")),
        Case("schedules: ordering=-updated_at", schedules + _query(ordering="-updated_at")),
        Case("runs: default (newest)", runs),
        Case("runs: next page (cursor)", next_of="runs: default (newest)"),
        Case("runs: status=failed", runs + _query(status="failed")),
        Case("runs: status=running/retrying", runs + _query(status=["running", "retrying"])),
        Case("runs: schedule (hot)", runs + _query(schedule=data.hot_schedule)),
        Case("runs: trigger=backfill", runs + _query(trigger="backfill")),
        Case("runs: agent", runs + _query(agent="agent-07")),
        Case("runs: one day, 10 days ago", runs + _query(created_after=day_ago_10.isoformat(),
                                                          created_before=day_ago_9.isoformat())),
        Case("runs: failed+schedule, 7 days", runs + _query(status="failed", trigger="schedule",
                                                            created_after=week_ago.isoformat())),
        Case("schedule's runs (hot)", f"{schedules}{data.hot_schedule}/runs/"),
        Case("schedule's runs (typical), failed",
             f"{schedules}{data.typical_schedule}/runs/" + _query(status="failed")),
        Case("run detail (3 attempts)", f"{runs}{data.run_with_attempts}/"),
        Case("runs, LimitOffset: first page", "/bench/offset/runs/" + _query(limit=50)),
        Case("runs, LimitOffset: offset 25,000", "/bench/offset/runs/" + _query(limit=50, offset=25_000)),
    ]  # fmt: skip


class Http:
    """GET over a new connection per request to the gunicorn under test, with the bearer token."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    def get(self, path: str) -> bytes:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request("GET", path, headers=self.headers)
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if response.status != 200:
            raise RuntimeError(f"GET {path} answered {response.status}: {body[:300]!r}")
        return body

    def timed(self, path: str) -> float:
        started = time.perf_counter()
        self.get(path)
        return (time.perf_counter() - started) * 1000


def _plan_indexes(sql: str) -> set[str]:
    """Index names, and flagged sequential scans, of runs and schedules in the plan of ``sql``."""
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    found: set[str] = set()

    def walk(node: dict[str, Any]) -> None:
        relation = node.get("Relation Name")
        if node.get("Index Name") and (relation in TABLES or relation is None):
            found.add(str(node["Index Name"]))
        elif node.get("Node Type") == "Seq Scan" and relation in TABLES:
            found.add(f"SEQ SCAN {relation}")
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return found


def _matching(sql: str) -> int | None:
    """How many rows the WHERE of the page query selects (the page's ORDER BY and LIMIT removed)."""
    body = re.sub(r"\s+ORDER BY\s.*$", "", sql, flags=re.S)
    if body == sql or "COUNT(" in sql.upper()[:40]:
        return None
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM ({body}) AS page")
        return int(cursor.fetchone()[0])


def _sql_ms(statements: list[str], repeat: int = 5) -> float:
    """Median time of running ``statements`` one after the other (no HTTP, Django or serialization around them)."""
    times = []
    with connection.cursor() as cursor:
        for _ in range(repeat):
            started = time.perf_counter()
            for sql in statements:
                cursor.execute(sql)
                cursor.fetchall()
            times.append((time.perf_counter() - started) * 1000)
    return percentile(times, 50)


def _inspect(client: Client, path: str) -> Inspection:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(path)
    if response.status_code != 200:
        raise RuntimeError(f"GET {path} answered {response.status_code} in process: {response.content[:300]!r}")
    data = [q["sql"] for q in captured.captured_queries if any(t in q["sql"] for t in DATA_TABLES)]
    indexes: set[str] = set()
    for sql in data:
        indexes |= _plan_indexes(sql)
    page = [sql for sql in data if re.search(r"\sLIMIT\s\d+", sql)]
    flagged = sorted(indexes, key=lambda name: (not name.startswith("SEQ"), name))
    return Inspection(
        queries=len(captured.captured_queries),
        matching=_matching(page[-1]) if page else None,
        indexes=", ".join(flagged) or "—",
        sql_ms=_sql_ms(data),
    )


def _next_path(body: bytes) -> str:
    link = json.loads(body).get("next")
    if not link:
        raise RuntimeError("the first page has no next link")
    parts = urlsplit(link)
    return f"{parts.path}?{parts.query}"


@contextmanager
def gunicorn(*, log: Path) -> Iterator[int]:
    """One sync gunicorn worker serving the project (plus the comparison route) on a free port."""
    port = free_port()
    children = Children()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.api_settings", "API_RATE_LIMIT": RATE_LIMIT}
    proc = children.start(
        ["-m", "gunicorn", "echoflow.wsgi:application", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        log=log, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"gunicorn did not start; see {log}") from None
                time.sleep(0.1)
        yield port
    finally:
        children.stop_all()


def _measure(case: Case, path: str, client: Client, http: Http, *, requests: int, warmup: int) -> Figures:
    inspection = _inspect(client, path)
    for _ in range(warmup):
        http.get(path)
    times = [http.timed(path) for _ in range(requests)]
    return Figures(case, path, inspection, times)


def run(*, schedules: int, runs: int, requests: int, warmup: int, workdir: Path) -> None:
    truncate(["runs_runattempt", "runs_run", "schedules_schedule", "events_outboxevent"])
    try:
        data = api_data_generate(schedules=schedules, runs=runs)
        phases = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in data.phases.items())
        print(
            f"# api data: {schedules:,} schedules, {runs:,} runs, {data.attempts:,} attempts in "
            f"{sum(data.phases.values()):.1f} s ({phases})",
            flush=True,
        )
        measure(data, requests=requests, warmup=warmup, workdir=workdir)
    finally:
        truncate(["runs_runattempt", "runs_run", "schedules_schedule"])


def measure(data: ApiData, *, requests: int, warmup: int, workdir: Path) -> list[Figures]:
    in_org = _org_sizes(data)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {data.token}", HTTP_HOST="127.0.0.1")
    results: list[Figures] = []
    with (
        override_settings(ROOT_URLCONF="bench.api_urls", API_RATE_LIMIT=RATE_LIMIT),
        gunicorn(log=workdir / "gunicorn.log") as port,
    ):
        http = Http(port, data.token)
        answers: dict[str, bytes] = {}
        for case in cases(data, _schedule_name(data.typical_schedule)):
            path = case.path or _next_path(answers[case.next_of])
            answers[case.label] = http.get(path)
            results.append(_measure(case, path, client, http, requests=requests, warmup=warmup))
    rows = []
    for figures in results:
        p95 = percentile(figures.times_ms, 95)
        seen = figures.inspection
        rows.append(
            [
                figures.case.label,
                "—" if seen.matching is None else seen.matching,
                percentile(figures.times_ms, 50),
                p95,
                percentile(figures.times_ms, 99),
                "yes" if p95 <= TARGET_P95_MS else "NO",
                seen.queries,
                seen.sql_ms,
                seen.indexes,
            ]
        )
    print_table(
        f"api: {data.schedules:,} schedules, {data.runs:,} runs (big organization: {in_org[0]:,} / {in_org[1]:,}); "
        f"{requests} requests per case over HTTP",
        ["request", "rows matching", "p50 ms", "p95 ms", "p99 ms", f"p95 ≤ {TARGET_P95_MS:.0f} ms", "queries",
         "data SQL ms", "index used"],
        rows,
    )  # fmt: skip
    return results


def _org_sizes(data: ApiData) -> tuple[int, int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM schedules_schedule WHERE organization_id = %s), "
            "(SELECT count(*) FROM runs_run WHERE organization_id = %s)",
            [data.org.pk, data.org.pk],
        )
        schedules, runs = cursor.fetchone()
    return int(schedules), int(runs)


def _schedule_name(pk: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM schedules_schedule WHERE id = %s", [pk])
        return str(cursor.fetchone()[0])
