"""The README's first command: ``manage.py up`` on the embedded default (SQLite + filesystem broker) brings up
web, worker, beat and Flower, and the demo schedule's runs succeed through a real worker."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from echoflow.private_redis import free_port

ROOT = Path(__file__).resolve().parent.parent


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


def _succeeded_runs(db: Path) -> list[tuple[str, int, str]]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute(
                "SELECT r.status, r.attempts, r.output FROM runs_run r "
                "JOIN schedules_schedule s ON s.id = r.schedule_id "
                "WHERE s.name = 'demo: echo every 10 seconds' AND r.status = 'succeeded'"
            ).fetchall()
    except sqlite3.OperationalError:
        return []  # not migrated yet


def _wait(predicate: object, timeout: float, what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        if proc.poll() is not None:
            pytest.fail(f"`manage.py up` exited early with {proc.returncode} while waiting for {what}")
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def test_up_runs_web_worker_beat_and_flower_and_the_demo_schedule_succeeds(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DEBUG"}}
    env.update({"ECHOFLOW_VAR_DIR": str(tmp_path), "EVENTS_REDIS_URL": "", "PYTHONUNBUFFERED": "1"})
    web, flower = free_port(), free_port()
    log = (tmp_path / "up.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "up",
            "--port",
            str(web),
            "--flower-port",
            str(flower),
            "--concurrency",
            "1",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        db = tmp_path / "echoflow.sqlite3"
        _wait(lambda: len(_succeeded_runs(db)) >= 1, 90, "a demo run to succeed", proc)
        status, output, attempts = (
            _succeeded_runs(db)[0][0],
            _succeeded_runs(db)[0][2],
            _succeeded_runs(db)[0][1],
        )
        assert (status, attempts) == ("succeeded", 1)
        assert json.loads(output) == {"hello": "from EchoFlow"}

        code, body = _get(f"http://127.0.0.1:{web}/healthz")
        assert code == 200, body
        assert json.loads(body)["checks"]["dispatcher"]["ok"] is True
        code, body = _get(f"http://127.0.0.1:{web}/admin/login/")
        assert code == 200 and b"EchoFlow" in body
        _wait(lambda: _get(f"http://127.0.0.1:{flower}/")[0] == 200, 30, "Flower to answer", proc)
        printed = (tmp_path / "up.log").read_text(errors="replace")
        assert "Created the admin user: admin / " in printed
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("`manage.py up` did not stop within 40 s of Ctrl-C")
        log.close()
    assert proc.returncode == 0, (tmp_path / "up.log").read_text(errors="replace")[-3000:]
    # Nothing is left running: every child was in its own process group, stopped by `up`.
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert leftovers == []
