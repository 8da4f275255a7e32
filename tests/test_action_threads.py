"""Helper threads for actions are reused, never handed a second action while one is stuck, bounded, and belong to
the process that started them (runs/action_threads.py)."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

import pytest

from runs import action_threads
from runs.action_threads import action_start


@pytest.fixture(autouse=True)
def _fresh_helpers() -> Iterator[None]:
    action_threads._idle.clear()
    yield
    action_threads._idle.clear()


def _wait(event: threading.Event) -> None:
    event.wait(10)


def _run(name: str = "echoflow-run-1") -> tuple[int, str]:
    seen: dict[str, Any] = {}

    def work() -> None:
        seen["ident"] = threading.get_ident()
        seen["name"] = threading.current_thread().name

    job = action_start(work, name=name)
    assert job.wait(5)
    return seen["ident"], seen["name"]


def test_a_helper_that_finished_runs_the_next_action() -> None:
    first, name = _run("echoflow-run-1")
    second, _ = _run("echoflow-run-2")

    assert first == second != threading.get_ident()
    assert name == "echoflow-run-1"  # the thread carries the run's name while it works for it
    assert action_threads.idle_count() == 1


def test_a_stuck_action_keeps_its_helper_and_the_next_action_gets_another() -> None:
    release = threading.Event()
    stuck = action_start(lambda: _wait(release), name="echoflow-run-1")
    try:
        assert not stuck.wait(0.05) and stuck.running
        ident, _ = _run("echoflow-run-2")
        assert ident != threading.get_ident()
        assert action_threads.idle_count() == 1  # the second helper, not the stuck one
    finally:
        release.set()
    assert stuck.wait(5)
    assert action_threads.idle_count() == 2


def test_no_more_than_max_idle_helpers_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(action_threads, "MAX_IDLE", 2)
    release = threading.Event()
    jobs = [action_start(lambda: _wait(release), name=f"echoflow-run-{i}") for i in range(4)]
    release.set()
    assert all(job.wait(5) for job in jobs)

    assert action_threads.idle_count() == 2


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the exit ends the thread
def test_a_helper_whose_action_raised_system_exit_is_not_reused() -> None:
    threads: list[threading.Thread] = []

    def leave() -> None:
        threads.append(threading.current_thread())
        raise SystemExit(3)

    job = action_start(leave, name="echoflow-run-1")
    assert job.wait(5)
    threads[0].join(5)
    assert not threads[0].is_alive()
    assert action_threads.idle_count() == 0
    _run("echoflow-run-2")  # a new helper


def _child(conn: Connection) -> None:
    try:
        ran = threading.Event()
        job = action_start(ran.set, name="echoflow-run-child")
        conn.send((job.wait(5), ran.is_set(), action_threads.idle_count()))
    finally:
        conn.close()


def test_a_forked_process_starts_its_own_helpers() -> None:
    _run()  # a helper waits in this process
    assert action_threads.idle_count() == 1
    context = multiprocessing.get_context("fork")  # as the prefork pool starts its processes
    parent, child = context.Pipe()
    process = context.Process(target=_child, args=(child,))
    process.start()
    assert parent.poll(10), "the child's action never ran (it was handed to a thread of the parent)"
    assert parent.recv() == (True, True, 1)
    process.join(10)
    assert process.exitcode == 0
