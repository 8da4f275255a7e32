"""The Celery app's database-connection handling around tasks (see docs/benchmarks.md, scenario lag)."""

from __future__ import annotations

from types import SimpleNamespace
from unittest import mock

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
