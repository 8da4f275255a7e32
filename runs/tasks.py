"""Celery tasks: thin wrappers that take ids and call one service."""

from __future__ import annotations

import logging
import socket
from typing import Any

from celery import shared_task

from echoflow.events.bus import outbox_relay
from runs.dispatcher import dispatch_tick
from runs.executor import run_execute
from runs.services import runs_reap

logger = logging.getLogger(__name__)


@shared_task(name="echoflow.execute_run", bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def execute_run(self: Any, run_id: int) -> str | None:
    worker = getattr(self.request, "hostname", None) or socket.gethostname()
    return run_execute(run_id=run_id, worker=str(worker))


@shared_task(name="echoflow.system.dispatch", ignore_result=True)
def dispatch() -> dict[str, int]:
    result = dispatch_tick()
    outbox_relay()
    return result.__dict__


@shared_task(name="echoflow.system.relay_events", ignore_result=True)
def relay_events() -> int:
    return outbox_relay()


@shared_task(name="echoflow.system.reap", ignore_result=True)
def reap() -> int:
    return runs_reap()
