"""The Celery application shared by web, workers and beat."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "echoflow.settings")

app = Celery("echoflow")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["runs", "echoflow.observability"])


def _connect_signals() -> None:
    from celery.signals import worker_shutting_down

    from runs.shutdown import on_worker_shutting_down

    worker_shutting_down.connect(on_worker_shutting_down, weak=False)


_connect_signals()
