"""What every scenario shares: a private PostgreSQL database and redis-server, child processes, and the table.

The orchestrator (``python -m bench`` or ``manage.py bench``) never touches the project's own database: it creates
``echoflow_bench_<pid>`` on the PostgreSQL server of ``--postgres`` (default: the server of DATABASE_URL, else
127.0.0.1:5432 as postgres), migrates it in a subprocess, starts a redis-server of its own on a free 127.0.0.1
port, runs the scenarios in a child process pointed at both, and drops / stops both at the end, whatever happened.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from echoflow.private_redis import PrivateRedis

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def server_url(database_url: str | None) -> str:
    """The maintenance URL (database ``postgres``) of the server behind ``database_url``; localhost by default."""
    if not database_url or not database_url.startswith(("postgres://", "postgresql://")):
        return "postgresql://postgres@127.0.0.1:5432/postgres"
    parts = urlsplit(database_url)
    return urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, ""))


def database_url(server: str, name: str) -> str:
    parts = urlsplit(server)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


def _admin_execute(server: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(server, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.encode())


@contextmanager
def bench_environment(*, postgres: str | None = None, log: bool = True) -> Iterator[dict[str, str]]:
    """Yield the environment of a child process that uses a fresh, migrated database and a private Redis."""
    server = server_url(postgres or os.environ.get("DATABASE_URL"))
    name = f"echoflow_bench_{os.getpid()}"
    workdir = Path(tempfile.mkdtemp(prefix="echoflow-bench-"))
    redis_server = PrivateRedis(workdir)  # no persistence: LLEN counts only this benchmark's messages
    created = False
    try:
        redis_server.start()
        _admin_execute(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        _admin_execute(server, f'CREATE DATABASE "{name}"')
        created = True
        env = {
            **os.environ,
            "DATABASE_URL": database_url(server, name),
            "REDIS_URL": redis_server.url,
            "CELERY_BROKER_URL": redis_server.url,
            "EVENTS_REDIS_URL": redis_server.url,
            "ECHOFLOW_VAR_DIR": str(workdir / "var"),
            "DJANGO_SETTINGS_MODULE": "echoflow.settings",
            # DEBUG off, as in production: with it on, Django formats and keeps the SQL of every query.
            "DEBUG": "0",
            "SECRET_KEY": secrets.token_urlsafe(32),
            "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
            "PYTHONPATH": str(ROOT),
        }
        env.pop("CELERY_TASK_ALWAYS_EAGER", None)
        started = time.monotonic()
        subprocess.run(
            [PYTHON, "manage.py", "migrate", "-v0", "--skip-checks"], cwd=ROOT, env=env, check=True, timeout=600
        )
        if log:
            print(f"# bench database {name} migrated in {time.monotonic() - started:.1f} s", flush=True)
        yield env
    finally:
        if created:
            try:
                _admin_execute(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except Exception as exc:  # the report must still come out; say what was left behind
                print(f"# could not drop database {name}: {exc}", file=sys.stderr)
        redis_server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class Children:
    """Child processes of one scenario, each in its own process group, all stopped at the end."""

    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(
        self, args: Sequence[str], *, log: Path | None = None, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115 (closed by the child)
        proc = subprocess.Popen(
            [PYTHON, *args], cwd=ROOT, env=dict(env if env is not None else os.environ), stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
        self._terminate(proc)
        self._reap(proc, timeout)

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)

    @staticmethod
    def _reap(proc: subprocess.Popen[bytes], timeout: float) -> None:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop_all(self) -> None:
        # SIGTERM to every group first, so that their warm shutdowns overlap instead of adding up.
        for proc in self.procs:
            self._terminate(proc)
        for proc in self.procs:
            self._reap(proc, 15.0)
        self.procs.clear()


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A Markdown table (pasteable into docs/benchmarks.md)."""

    def text(value: object) -> str:
        if isinstance(value, float):
            return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    cells = [[text(v) for v in row] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print(f"\n## {title}\n")
    print("| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")
    print(flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def ratio(ours: float, theirs: float) -> str:
    if not theirs or theirs != theirs:  # zero or NaN
        return "n/a"
    return f"{ours / theirs:.2f}x"
