"""Celery's worker consumer, publishing the task events of a short window together instead of one by one.

With task events on (``CELERY_WORKER_SEND_TASK_EVENTS``, what Flower shows), the worker's main process buffers each
task event (received, started, succeeded, ...) and flushes the buffer on the next turn of its event loop. Under
load that is one synchronous Redis ``PUBLISH`` per event, about three per run, each waited for by the process
that also acknowledges messages and hands them to the pool: 45 % of its busy time in the lag benchmark
(py-spy, docs/benchmarks.md §2), while the pool processes waited for it.

This consumer flushes the buffer ``EVENT_FLUSH_DELAY`` seconds after the first event of a window, so the events of
that window go out as one ``task.multi`` message (Celery's own batch format, which Flower and ``celery events``
read). Celery still flushes at once when a window collects ``buffer_limit`` (24) events. Event consumers see task
events at most that much later; nothing else changes. Buffered events are flushed when the consumer shuts down.
Selected by ``CELERY_WORKER_CONSUMER`` in ``echoflow.settings``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery.utils.log import get_logger
from celery.worker.consumer import Consumer as CeleryConsumer

logger = get_logger(__name__)

EVENT_FLUSH_DELAY = 0.05


class Consumer(CeleryConsumer):
    # Attributes Celery sets on its consumer (celery-types does not declare them).
    hub: Any
    event_dispatcher: Any
    _flush_events: Callable[[], None]
    # The dispatcher a flush is scheduled for: the consumer makes a new dispatcher each time it (re)connects, and a
    # timer of the old one's event loop may never fire.
    _flush_scheduled_for: Any = None

    def on_send_event_buffered(self) -> Any:
        # Celery wires this callback only when the worker runs an event loop (self.hub).
        dispatcher = self.event_dispatcher
        if dispatcher is None or self._flush_scheduled_for is dispatcher:
            return
        self._flush_scheduled_for = dispatcher
        self.hub.call_later(EVENT_FLUSH_DELAY, self._flush_events_window)

    def _flush_events_window(self) -> None:
        self._flush_scheduled_for = None
        self._flush_events()

    def shutdown(self) -> None:
        dispatcher = self.event_dispatcher
        if dispatcher is not None:
            try:
                dispatcher.flush()
            except Exception:  # shutting down: an unreachable broker must not keep the worker from stopping
                logger.warning("could not publish the last task events at shutdown", exc_info=True)
        super().shutdown()
