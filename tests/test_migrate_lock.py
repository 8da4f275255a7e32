"""``manage.py migrate`` on PostgreSQL runs one at a time per database (echoflow/management/commands/migrate.py):
replicas that each run it as they start cannot apply the same migration twice at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from echoflow.management.commands.migrate import MIGRATE_LOCK_KEY
from tests.conftest import child_env, wait_until

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _session() -> psycopg.Connection[tuple[object, ...]]:
    db = connection.settings_dict
    return psycopg.connect(
        host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"], dbname=db["NAME"], autocommit=True
    )


def _waiting_for_the_lock(session: psycopg.Connection[tuple[object, ...]]) -> bool:
    row = session.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database())"
    ).fetchone()
    return bool(row and row[0])


def _migrate(tmp_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env=child_env(tmp_path, with_redis=False),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_second_migrate_waits_for_the_first_and_then_finds_nothing_to_do(tmp_path: Path) -> None:
    with _session() as first:  # stands in for a migrate that is running: it holds the lock
        assert first.execute("SELECT pg_try_advisory_lock(%s)", [MIGRATE_LOCK_KEY]).fetchone() == (True,)
        second = _migrate(tmp_path)
        try:
            wait_until(lambda: _waiting_for_the_lock(first), timeout=60, what="the second migrate to wait for the lock")
            assert second.poll() is None  # blocked, not failed
            first.execute("SELECT pg_advisory_unlock(%s)", [MIGRATE_LOCK_KEY])
            out, err = second.communicate(timeout=120)
        finally:
            if second.poll() is None:
                second.kill()
    assert second.returncode == 0, err
    assert "Another migrate is running on this database; waiting for it to finish..." in err
    assert "No migrations to apply." in out


def test_migrate_lets_go_of_the_lock_when_it_is_done(tmp_path: Path) -> None:
    done = _migrate(tmp_path)
    _, err = done.communicate(timeout=120)
    assert done.returncode == 0, err
    assert "waiting" not in err
    with _session() as other:
        assert other.execute("SELECT pg_try_advisory_lock(%s)", [MIGRATE_LOCK_KEY]).fetchone() == (True,)
