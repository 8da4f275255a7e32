"""Graceful worker shutdown: running attempts get a grace period, then are recorded ``interrupted`` and retried.

Celery's warm shutdown (SIGTERM) stops taking messages and waits for the running tasks, however long they take;
an orchestrator then kills the worker and the reaper finds the attempts only after their heartbeats go stale.
Here the worker's main process starts a timer on ``worker_shutting_down``: when the grace period
(``ECHOFLOW_SHUTDOWN_GRACE``) is over, the attempts the worker still runs are closed as ``interrupted`` and their
runs go back to ``retrying``, due at once, so another worker takes them. The executors notice at their next
heartbeat that the run is no longer theirs, tell the action to stop, and return; then the worker exits.
A cold shutdown (SIGQUIT) does the same without waiting.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

logger = logging.getLogger(__name__)

_started: set[str] = set()
_lock = threading.Lock()


def interrupt_now(hostname: str, reason: str) -> None:
    from django.db import connections

    from runs.services import runs_interrupt

    try:
        count = runs_interrupt(worker=hostname, reason=reason)
        if count:
            logger.warning("shutdown: %s running attempt(s) of %s recorded interrupted and retried", count, hostname)
    except Exception:
        # The database may be the reason for the shutdown; the reaper records the attempts lost later.
        logger.exception("shutdown: could not record the interrupted attempts of %s", hostname)
    finally:
        connections.close_all()


def on_worker_shutting_down(sender: Any = None, how: str = "Warm", **_: Any) -> None:
    """Connected to Celery's ``worker_shutting_down`` (sent in the worker's main process, inside the signal
    handler: only a thread is started here)."""
    from django.conf import settings

    hostname = str(sender or "")
    if not hostname:
        return
    grace = float(settings.ECHOFLOW["SHUTDOWN_GRACE_SECONDS"])
    if how == "Cold":
        # The pool's processes are about to be terminated: record now, and wait a little for it to be done.
        reason = "cold shutdown, the attempt was stopped"
        thread = threading.Thread(target=interrupt_now, args=(hostname, reason), name="echoflow-interrupt", daemon=True)
        thread.start()
        thread.join(timeout=5)
        return
    with _lock:
        if hostname in _started:
            return
        _started.add(hostname)
    logger.warning("shutdown: %s gives its running attempts %g s to finish", hostname, grace)
    reason = f"the attempt did not finish within the {grace:g} s grace period"
    timer = threading.Timer(grace, interrupt_now, args=(hostname, reason))
    timer.name = "echoflow-shutdown-grace"
    timer.daemon = True
    timer.start()
