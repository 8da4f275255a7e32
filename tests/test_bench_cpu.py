"""bench.cpu: the CPU time of processes picked by their command line, and the host's share stolen."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cpu import CpuUse, ProcessCpu, command_line, percent, pool_kind

pytestmark = pytest.mark.skipif(not Path("/proc/stat").exists(), reason="reads /proc (Linux)")

BURN = "import sys, time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\nsys.stdin.read()"


def test_counts_the_cpu_of_the_processes_it_classifies_and_only_them() -> None:
    cpu = ProcessCpu(lambda command: "burner" if "echoflow-cpu-test-burner" in command else None)
    before = cpu.snapshot()
    child = subprocess.Popen([sys.executable, "-c", BURN, "echoflow-cpu-test-burner"], stdin=subprocess.PIPE, text=True)
    try:
        # The child burned 0.3 s of CPU and then waits on stdin, still alive for the second snapshot.
        enough = 0.25 * os.sysconf("SC_CLK_TCK")
        give_up = time.monotonic() + 60  # a safety net against hanging, not a timing assertion
        while not any(kind == "burner" and used >= enough for (kind, _), used in cpu.snapshot().ticks.items()):
            assert child.poll() is None
            assert time.monotonic() < give_up, "the burner's CPU time never showed in /proc"
            time.sleep(0.01)
        use = cpu.between(before, cpu.snapshot())
    finally:
        child.communicate("")
    assert set(use.seconds) == {"burner"}  # every other process of the machine was left out
    assert use.seconds["burner"] >= 0.25
    assert use.busy is not None and 0 < use.busy <= 1
    assert use.stolen is not None and 0 <= use.stolen < 1


# A main process that forks one pool process (same command line); only the pool process burns CPU, then both wait.
FORK_AND_BURN = (
    "import os, sys, time\n"
    "if os.fork() == 0:\n"
    "    end = time.process_time() + 0.3\n"
    "    while time.process_time() < end: pass\n"
    "    time.sleep(600)\n"
    "sys.stdin.read()\n"
)


def test_tells_a_workers_pool_processes_from_its_main_process() -> None:
    def classify(command: str) -> str | None:
        return "worker" if "echoflow-cpu-test-pool" in command else None

    cpu = ProcessCpu(classify, pools=frozenset({"worker"}))
    unsplit = ProcessCpu(classify)
    before = cpu.snapshot()
    main = subprocess.Popen(
        [sys.executable, "-c", FORK_AND_BURN, "echoflow-cpu-test-pool"], stdin=subprocess.PIPE, start_new_session=True
    )
    pids: dict[str, int] = {}
    try:
        enough = 0.25 * os.sysconf("SC_CLK_TCK")
        give_up = time.monotonic() + 60  # a safety net against hanging, not a timing assertion
        while True:
            after = cpu.snapshot()
            pids = {kind: pid for kind, pid in after.ticks}
            if after.ticks.get((pool_kind("worker"), pids.get(pool_kind("worker"), -1)), 0) >= enough:
                break
            assert main.poll() is None
            assert time.monotonic() < give_up, "the pool process's CPU time never showed in /proc"
            time.sleep(0.01)
        assert pids["worker"] == main.pid  # the main process keeps the kind's own name
        assert pids[pool_kind("worker")] != main.pid
        use = cpu.between(before, after)
        # Without ``pools``, both are one kind.
        assert {kind for kind, _ in unsplit.snapshot().ticks} == {"worker"}
    finally:
        os.killpg(main.pid, signal.SIGKILL)  # the pool process too, found or not
        main.communicate(b"")
    assert use.seconds[pool_kind("worker")] >= 0.25
    assert use.seconds["worker"] < use.seconds[pool_kind("worker")]


def test_command_line_of_a_live_process_and_of_a_missing_one() -> None:
    assert "pytest" in command_line(os.getpid()) or "python" in command_line(os.getpid())
    assert command_line(2**22 + 7) == ""  # above any pid Linux hands out: no such process, no error


def test_uses_add_up_and_give_shares_of_the_host() -> None:
    a = CpuUse({"run worker": 1.0}, {"user": 60, "idle": 30, "steal": 10})
    b = CpuUse({"run worker": 0.5, "PostgreSQL": 2.0}, {"user": 20, "idle": 70, "steal": 10})
    both = a.plus(b)
    assert both.seconds == {"run worker": 1.5, "PostgreSQL": 2.0}
    assert both.total == 3.5
    assert both.stolen == pytest.approx(0.1)
    assert both.busy == pytest.approx(0.4)
    assert both.per_item_ms("PostgreSQL", 1000) == pytest.approx(2.0)
    assert percent(both.stolen) == "10 %"
    assert CpuUse().stolen is None and percent(None) == "n/a"
