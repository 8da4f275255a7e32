"""The Celery app's database-connection handling around tasks (see docs/benchmarks.md, scenario lag)."""

from __future__ import annotations

import time
from types import SimpleNamespace
from unittest import mock

import pytest
from celery.signals import task_postrun, task_prerun

from echoflow import celery as celery_app


class _Task:
    """Stands in for a task as signals see it (a sender must be hashable)."""

    def __init__(self, *, eager: bool) -> None:
        self.request = SimpleNamespace(is_eager=eager)


def test_worker_keeps_its_database_connection_between_tasks() -> None:
    # Without it, Celery's Django fixup closes the connection before and after every task: one new
    # PostgreSQL connection per run and per dispatch tick.
    assert celery_app.app.conf.get("CELERY_DB_REUSE_MAX")


def test_old_connections_are_closed_around_worker_tasks() -> None:
    task = _Task(eager=False)
    with mock.patch("django.db.close_old_connections") as close:
        task_prerun.send(sender=task, task_id="t", task=task, args=(), kwargs={})
        task_postrun.send(sender=task, task_id="t", task=task, args=(), kwargs={}, retval=None, state="SUCCESS")
    assert close.call_count == 2


def test_eager_tasks_keep_the_callers_connection() -> None:
    # An eager task runs inside the caller's transaction; closing "old" connections there would end it.
    task = _Task(eager=True)
    with mock.patch("django.db.close_old_connections") as close:
        celery_app._close_old_connections(task=task)
    close.assert_not_called()


def _run_task(task: _Task) -> None:
    from django.db import connection

    task_prerun.send(sender=task, task_id="t", task=task, args=(), kwargs={})
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    task_postrun.send(sender=task, task_id="t", task=task, args=(), kwargs={}, retval=None, state="SUCCESS")


@pytest.mark.django_db(transaction=True)
def test_a_connection_a_task_used_a_moment_ago_is_not_health_checked_again() -> None:
    # CONN_HEALTH_CHECKS costs a SELECT 1 before a kept connection's first use; paid per task, that was a tenth of
    # a no-op run. A connection idle for longer, or after a database error, is still checked.
    from django.db import connections

    connection = connections["default"]
    task = _Task(eager=False)
    _run_task(task)
    with mock.patch.object(type(connection), "is_usable", autospec=True, return_value=True) as usable:
        for _ in range(3):
            _run_task(task)
        assert usable.call_count == 0
        celery_app._last_task.ended = time.monotonic() - celery_app.HEALTH_CHECK_AFTER_IDLE_SECONDS - 1
        _run_task(task)
        assert usable.call_count == 1
        connection.errors_occurred = True
        _run_task(task)
        assert usable.call_count == 2
