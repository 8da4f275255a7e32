"""The Celery application shared by web, workers and beat."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "echoflow.settings")

app = Celery("echoflow")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["runs", "echoflow.observability"])


def _close_old_connections(task: Any = None, **_: Any) -> None:
    """Around each task, what Django does around each request: drop broken or CONN_MAX_AGE-old connections.

    Not for eager tasks: they run inside the caller's transaction (and a test's), which must keep its connection.
    """
    if task is not None and getattr(task.request, "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()


def _connect_signals() -> None:
    from celery.signals import task_postrun, task_prerun, worker_shutting_down

    from runs.shutdown import on_worker_shutting_down

    worker_shutting_down.connect(on_worker_shutting_down, weak=False)
    task_prerun.connect(_close_old_connections, weak=False)
    task_postrun.connect(_close_old_connections, weak=False)


_connect_signals()
