"""Shared fixtures. Tests about PostgreSQL, Redis or a Celery worker use the real thing.

Locally, a test marked ``postgres`` or ``redis`` is skipped when that server is not there; with
ECHOFLOW_REQUIRE_SERVICES=1 (set by .ci/run) it fails instead, so CI can never pass by skipping them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient

from echoflow.accounts.models import Organization
from echoflow.accounts.services import organization_get_or_create

REQUIRE_SERVICES = os.environ.get("ECHOFLOW_REQUIRE_SERVICES", "") in {"1", "true", "yes"}


def _redis_ok() -> bool:
    if not settings.REDIS_URL:
        return False
    try:
        return bool(redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    is_postgres = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
    redis_ok = _redis_ok()
    for item in items:
        if "postgres" in item.keywords and not is_postgres:
            reason = "needs PostgreSQL: run with DATABASE_URL=postgres://… (scripts/test.sh does)"
            if REQUIRE_SERVICES:
                item.add_marker(pytest.mark.usefixtures("_fail_missing_postgres"))
            else:
                item.add_marker(pytest.mark.skip(reason=reason))
        if "redis" in item.keywords and not redis_ok:
            if REQUIRE_SERVICES:
                item.add_marker(pytest.mark.usefixtures("_fail_missing_redis"))
            else:
                item.add_marker(pytest.mark.skip(reason="needs Redis at REDIS_URL"))


@pytest.fixture
def _fail_missing_postgres() -> None:
    pytest.fail("ECHOFLOW_REQUIRE_SERVICES=1 but DATABASE_URL is not PostgreSQL")


@pytest.fixture
def _fail_missing_redis() -> None:
    pytest.fail(f"ECHOFLOW_REQUIRE_SERVICES=1 but Redis does not answer at {settings.REDIS_URL!r}")


@pytest.fixture
def org(db: None) -> Organization:
    return organization_get_or_create(name="Acme", slug="acme")


@pytest.fixture
def other_org(db: None) -> Organization:
    return organization_get_or_create(name="Globex", slug="globex")


@pytest.fixture
def editor(org: Organization) -> APIClient:
    """An API client with an editor's token in ``org``."""
    from tests.test_api_helpers import client_for

    return client_for(org, "editor")


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.REDIS_URL)

    def clean() -> None:
        client.delete(settings.EVENTS_STREAM)
        for key in client.scan_iter(f"{settings.EVENTS_STREAM}:sent:*"):
            client.delete(key)

    clean()
    yield client
    clean()


@pytest.fixture
def vendor() -> str:
    return connection.vendor


@pytest.fixture
def celery_worker_thread(transactional_db: None) -> Iterator[object]:
    """A real Celery worker (celery.contrib.testing) consuming the run and system queues over the real broker."""
    from celery.contrib.testing.worker import start_worker

    from echoflow.celery import app

    app.conf.task_always_eager = False
    # A dedicated Redis database: leftovers of an earlier run must not reach this worker.
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    with start_worker(
        app,
        pool="threads",
        concurrency=4,
        perform_ping_check=False,
        queues=settings.WORKER_QUEUES.split(","),
        loglevel="WARNING",
        shutdown_timeout=30,
    ) as worker:
        yield worker
    _drop_other_connections()


def _drop_other_connections() -> None:
    """Worker threads keep their own database connections; end them so the test database can be flushed."""
    from django.db import connection as conn

    if conn.vendor == "postgresql":
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


def embedded_child(code: str, var_dir: Path, *args: str, timeout: float = 300, **extra: str) -> Any:
    """Run ``code`` in a new Python on the embedded default (SQLite in ``var_dir``; no database, broker, Redis or
    eager mode inherited from this process, unless ``extra`` sets them) and return the JSON of its last line."""
    inherited = {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "EVENTS_REDIS_URL", "CELERY_TASK_ALWAYS_EAGER"}
    env = {k: v for k, v in os.environ.items() if k not in inherited}
    env.update(
        {
            "ECHOFLOW_VAR_DIR": str(var_dir),
            "EVENTS_REDIS_URL": "",
            "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
            "DJANGO_SETTINGS_MODULE": "echoflow.settings",
            **extra,
        }
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def child_env(var_dir: object, *, with_redis: bool = True, **extra: str) -> dict[str, str]:
    """The environment of a child process (a real worker, the chaos command) on the test's database and Redis."""
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "DEBUG": "1",
        "ECHOFLOW_VAR_DIR": str(var_dir),
        **extra,
    }
    if with_redis:
        env["REDIS_URL"] = settings.REDIS_URL
    return env


def wait_until(predicate: Callable[[], bool], *, timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``predicate`` until true: waiting for a real worker, not a sleep standing in for control of time."""
    import time as _time

    deadline = _time.monotonic() + timeout
    while _time.monotonic() < deadline:
        if predicate():
            return
        _time.sleep(0.05)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
