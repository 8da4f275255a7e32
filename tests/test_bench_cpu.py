"""bench.cpu: the CPU time of processes picked by their command line, and the host's share stolen."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cpu import CpuUse, ProcessCpu, command_line, percent

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
