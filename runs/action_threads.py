"""Reusable threads for actions.

The executor runs each action in a helper thread while the task's thread keeps the deadline, heartbeats and
notices cancellation (``runs.executor``). Starting a thread per attempt cost a no-op run about 0.6 ms of its
~5 ms in a busy worker (``Thread.start`` waits until the new thread runs: two switches of the GIL and the CPU);
a helper that finished its action waits here for the next one instead.

- A helper whose action never returns (one that ignores its cancellation flag) is simply never reused; the next
  attempt gets another helper.
- At most ``MAX_IDLE`` helpers wait per process; one that finishes while that many wait ends.
- Helpers belong to the process that started them: a forked child (prefork pool) starts its own.
- As in Celery's threads pool, a thread serves many attempts one after the other: thread-local state an action
  leaves behind is seen by later actions in that thread (database connections are closed after each action).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable

# Helpers kept waiting per process (the worker's concurrency is the most that run at once in one process).
MAX_IDLE = 16


class ActionJob:
    """One action handed to a helper thread; ``done`` is set when it returned (or raised)."""

    def __init__(self, work: Callable[[], None], name: str) -> None:
        self.work = work
        self.name = name
        self.done = threading.Event()

    def wait(self, timeout: float) -> bool:
        """Whether the action returned within ``timeout`` seconds."""
        return self.done.wait(timeout)

    @property
    def running(self) -> bool:
        return not self.done.is_set()


class _Helper:
    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue[ActionJob] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._serve, name="echoflow-action", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            job = self.jobs.get()
            self.thread.name = job.name
            try:
                job.work()
            except BaseException:  # SystemExit and the like end the thread: it is not put back
                job.done.set()
                raise
            self.thread.name = "echoflow-action"
            # Back among the idle ones before the waiting attempt hears it is done, so that its next attempt
            # finds this helper.
            kept = _release(self)
            job.done.set()
            if not kept:
                return


_lock = threading.Lock()
_idle: list[_Helper] = []


def _release(helper: _Helper) -> bool:
    """Put a helper back among the idle ones; False when enough wait already (the helper then ends)."""
    with _lock:
        if len(_idle) >= MAX_IDLE:
            return False
        _idle.append(helper)
        return True


def action_start(work: Callable[[], None], *, name: str) -> ActionJob:
    """Run ``work`` in a helper thread of this process, reusing an idle one."""
    job = ActionJob(work, name)
    with _lock:
        helper = _idle.pop() if _idle else None
    if helper is None:
        helper = _Helper()
    helper.jobs.put(job)
    return job


def idle_count() -> int:
    with _lock:
        return len(_idle)


def _forget_parent_helpers() -> None:
    # The threads of the parent do not exist in a forked child; handing them work would wait forever.
    global _lock
    _lock = threading.Lock()
    _idle.clear()


os.register_at_fork(after_in_child=_forget_parent_helpers)
