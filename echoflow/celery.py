"""The Celery application shared by web, workers and beat."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "echoflow.settings")

app = Celery("echoflow")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["runs", "echoflow.observability"])


# A connection a task of this thread used successfully less than this long ago is not health-checked again.
HEALTH_CHECK_AFTER_IDLE_SECONDS = 1.0
_last_task = threading.local()


def _close_old_connections(task: Any = None, **_: Any) -> None:
    """Around each task, what Django does around each request: drop broken or CONN_MAX_AGE-old connections.

    Django then checks a kept connection (``CONN_HEALTH_CHECKS``: a ``SELECT 1``) before its first use. A worker
    busy with short tasks would pay that round trip per task (a tenth of a no-op run's time), so a connection
    whose last task ended cleanly within ``HEALTH_CHECK_AFTER_IDLE_SECONDS`` counts as checked; one idle longer,
    or whose task had a database error, is checked (and replaced if broken) as before.

    Not for eager tasks: they run inside the caller's transaction (and a test's), which must keep its connection.
    """
    if task is not None and getattr(task.request, "is_eager", False):
        return
    from django.db import close_old_connections, connections

    close_old_connections()
    ended = getattr(_last_task, "ended", None)
    if ended is not None and time.monotonic() - ended < HEALTH_CHECK_AFTER_IDLE_SECONDS:
        for conn in connections.all(initialized_only=True):
            if conn.connection is not None and not conn.errors_occurred:
                conn.health_check_done = True  # type: ignore[attr-defined]


def _task_ended(task: Any = None, **kwargs: Any) -> None:
    _close_old_connections(task, **kwargs)
    _last_task.ended = time.monotonic()


def _connect_signals() -> None:
    from celery.signals import task_postrun, task_prerun, worker_shutting_down

    from runs.shutdown import on_worker_shutting_down

    worker_shutting_down.connect(on_worker_shutting_down, weak=False)
    task_prerun.connect(_close_old_connections, weak=False)
    task_postrun.connect(_task_ended, weak=False)


_connect_signals()
