"""Celery tasks: thin wrappers that take ids and call one service."""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

from celery import shared_task

from echoflow.events.bus import outbox_relay
from runs.dispatcher import dispatch_tick
from runs.executor import run_execute, run_execute_batch
from runs.sending import runs_give_back
from runs.services import runs_reap

logger = logging.getLogger(__name__)


# How long a pool process that asked to be ended waits for its worker to do it.
TERMINATE_WAIT_SECONDS = 30.0


def pool_process_terminate(app: Any, task_id: str | None) -> None:
    """End this pool process, and with it an action that ignores its cancellation flag (the attempt's outcome
    is already recorded). The worker's main process does it, as for ``revoke(terminate=True)``, and starts a
    fresh pool process. Not possible in the threads or solo pool: the action then runs on in the background."""
    from billiard.process import current_process

    if task_id is None or current_process().name == "MainProcess":
        logger.warning("the pool cannot end a stuck action (threads or solo pool); it keeps running until it returns")
        return
    app.control.revoke(task_id, terminate=True, signal="SIGKILL")
    time.sleep(TERMINATE_WAIT_SECONDS)
    logger.error(
        "the worker did not end this pool process within %g s; the stuck action runs on", TERMINATE_WAIT_SECONDS
    )


@shared_task(name="echoflow.execute_run", bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def execute_run(self: Any, run_id: int) -> str | None:
    worker = getattr(self.request, "hostname", None) or socket.gethostname()
    task_id = getattr(self.request, "id", None)
    return run_execute(run_id=run_id, worker=str(worker), on_stuck=lambda: pool_process_terminate(self.app, task_id))


@shared_task(name="echoflow.execute_runs", bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def execute_runs(self: Any, run_ids: list[int]) -> list[str | None]:
    """Several runs of a burst in one message (runs.sending.runs_messages), executed in turn."""
    worker = getattr(self.request, "hostname", None) or socket.gethostname()
    task_id = getattr(self.request, "id", None)
    return run_execute_batch(
        run_ids=[int(pk) for pk in run_ids],
        worker=str(worker),
        give_back=runs_give_back,
        on_stuck=lambda: pool_process_terminate(self.app, task_id),
    )


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
