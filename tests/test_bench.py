"""The benchmarks' smoke mode: every scenario runs end to end at a tiny size, so the scripts cannot rot.

Only completion and the shape of the printed tables are checked; benchmark times are never asserted.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture(scope="module")
def smoke_output() -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", "bench", "all", "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _table(output: str, title: str) -> list[list[str]]:
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("## ") and title in line)
    rows = []
    for line in lines[start + 1 :]:
        if line.startswith("## "):
            break
        if line.startswith("|") and not line.startswith("|-"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_dispatch_smoke_prints_echoflow_and_beat(smoke_output: str) -> None:
    header, *rows = _table(smoke_output, "dispatch:")
    assert header[:7] == ["system", "N", "written s", "enqueued s", "slots/s", "messages", "duplicates"]
    assert "vs beat" in header
    systems = [row[0] for row in rows]
    assert any(s.startswith("EchoFlow") for s in systems)
    assert "django-celery-beat DatabaseScheduler" in systems
    echoflow = next(row for row in rows if row[0].startswith("EchoFlow"))
    assert echoflow[6] == "0"  # exactly once: no duplicate run or message, whatever the speed
    # Every run reached the broker: the 200 go as messages of several runs (runs.sending), counted by what they carry.
    assert echoflow[3] != "—"
    assert int(echoflow[5].replace(",", "")) < 200


def test_throughput_smoke_prints_both_pools(smoke_output: str) -> None:
    header, *rows = _table(smoke_output, "throughput:")
    assert header == [
        "pool", "N", "EchoFlow done", "EchoFlow runs/s", "Celery done", "Celery tasks/s", "ratio",
        "Celery with EchoFlow's fixes done", "Celery with EchoFlow's fixes, tasks/s", "ratio to it",
    ]  # fmt: skip
    assert [row[0].split()[0] for row in rows] == ["prefork", "threads"]
    for row in rows:  # every run of every system finished, whatever the speed
        assert row[2] == row[4] == row[7] == row[1]


def test_lag_smoke_prints_echoflow_and_beat_percentiles(smoke_output: str) -> None:
    header, *rows = _table(smoke_output, "lag:")
    assert header[:5] == ["system", "runs due", "done", "sent p50", "sent p99"]
    assert [h for h in header if h.startswith(("start p", "finish p"))] == [
        "start p50", "start p95", "start p99", "finish p50", "finish p95", "finish p99",
    ]  # fmt: skip
    assert "p99 start vs beat" in header
    assert [row[0].split(",")[0].split(" (")[0] for row in rows] == [
        "EchoFlow", "django-celery-beat DatabaseScheduler", "Celery alone", "Celery alone",
    ]  # fmt: skip
    assert "with EchoFlow's fixes" in rows[3][0]
    echoflow = rows[0]
    assert int(echoflow[2].replace(",", "")) > 0  # runs really started and finished, whatever their lag


def test_lag_smoke_prints_the_cpu_each_side_used_per_run(smoke_output: str) -> None:
    header, *rows = _table(smoke_output, "lag: CPU")
    assert header == [
        "system", "drain s", "run worker", "system worker", "beat", "PostgreSQL", "Redis", "run worker: main",
        "run worker: pool", "total", "host busy", "host stolen",
    ]  # fmt: skip
    assert [row[0] for row in rows] == [
        "EchoFlow", "django-celery-beat", "Celery alone", "Celery alone with EchoFlow's fixes",
    ]  # fmt: skip
    echoflow = dict(zip(header, rows[0], strict=True))
    # The processes were found by their command lines: EchoFlow's run worker and PostgreSQL did the runs' work.
    assert float(echoflow["run worker"]) > 0
    assert float(echoflow["PostgreSQL"]) > 0
    assert rows[1][header.index("system worker")] == "—"  # beat's side has no such process
    for floor in rows[2:]:  # Celery alone: its worker found and counted, and no beat (the bench pushed the messages)
        assert float(floor[header.index("run worker")]) > 0
        assert floor[header.index("beat")] == "—"
    for row in rows:  # every side's run worker is prefork: its main process and its pool processes both found
        # ("—" when none was; a figure, however small, when one was: a smoke run's few runs may stay under a tick),
        parts = [row[header.index(f"run worker: {part}")] for part in ("main", "pool")]
        assert "—" not in parts
        # and the run worker's column is their sum.
        main, pool = (float(part) for part in parts)
        assert float(row[header.index("run worker")]) == pytest.approx(main + pool, abs=0.011)


def test_lag_smoke_runs_every_task_pushed_at_the_slot_by_celery_alone(smoke_output: str) -> None:
    header, *rows = _table(smoke_output, "lag:")
    for floor in rows[2:]:
        assert floor[header.index("done")] == floor[header.index("runs due")]
        assert floor[header.index("note")] == ""


def test_memory_smoke_prints_each_size_and_beat(smoke_output: str) -> None:
    header, *rows = _table(smoke_output, "memory:")
    assert header[:3] == ["system", "N", "beat MB"]
    assert "cold start s" in header
    assert "total vs beat" in header
    ours = [row for row in rows if row[0].startswith("EchoFlow")]
    # Beat apart, then beat inside the system worker (-B), at each size.
    assert [row[1] for row in ours] == ["1,000", "1,000", "5,000", "5,000"]
    assert [row[2] == "in the worker" for row in ours] == [False, True, False, True]
    assert any(row[0] == "django-celery-beat" for row in rows)
    cold = header.index("cold start s")
    assert all(row[cold] != "—" for row in ours)  # the dispatcher ticked at every size


def test_api_smoke_times_every_list_case_and_the_offset_comparison(smoke_output: str) -> None:
    header, *rows = _table(smoke_output, "api:")
    assert header == [
        "request", "rows matching", "p50 ms", "p95 ms", "p99 ms", "p95 ≤ 50 ms", "queries", "data SQL ms", "index used"
    ]  # fmt: skip
    labels = [row[0] for row in rows]
    for expected in ("schedules: default (by name)", "schedules: next page (cursor)", "runs: default (newest)",
                     "runs: next page (cursor)", "runs: status=failed", "schedule's runs (hot)",
                     "runs, LimitOffset: offset 25,000"):  # fmt: skip
        assert expected in labels
    for row in rows:
        float(row[3].replace(",", ""))  # every case was timed
        assert int(row[6]) >= 3  # token, membership, then the data: the queries were counted
    assert "# api data: 500 schedules, 5,000 runs" in smoke_output


def test_migrate_smoke_times_both_ways_of_making_the_change(smoke_output: str) -> None:
    header, *rows = _table(smoke_output, "migrate:")
    assert header == [
        "change", "runs", "runs given an agent", "took s", "writes meanwhile", "write p50 ms", "write p99 ms",
        "longest write ms",
    ]  # fmt: skip
    assert [row[0].split()[0] for row in rows] == ["one", "EchoFlow's"]
    # Both ways copy the same agents onto the same runs; and the worker's writes were timed during each.
    assert rows[0][2] == rows[1][2] and int(rows[0][2].replace(",", "")) > 0
    assert all(int(row[4].replace(",", "")) >= 1 for row in rows)


def test_smoke_drops_its_database(smoke_output: str) -> None:
    import os

    import psycopg

    from bench.common import server_url

    line = next(line for line in smoke_output.splitlines() if line.startswith("# bench database "))
    name = line.split()[3]
    with psycopg.connect(server_url(os.environ.get("DATABASE_URL")), autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
    assert found is None
