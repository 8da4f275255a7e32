"""CPU time of the benchmark's processes and of the host, read from ``/proc`` (Linux; empty elsewhere).

A latency figure on a shared two-core virtual machine moves by 2x from one run to the next with the host's load.
The CPU time each process used for the same work moves much less, and the time the hypervisor stole from this
machine says how much the latency figure can be trusted. ``ProcessCpu`` takes snapshots of both; the difference of
two snapshots is the CPU seconds each kind of process used between them (a process that started in between counts
from zero, one that ended in between is missing) and the share of the machine's time stolen in between.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")

# Fields of the first line of /proc/stat after "cpu" (man 5 proc): user nice system idle iowait irq softirq steal.
_STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


@dataclass(frozen=True)
class Snapshot:
    ticks: dict[tuple[str, int], int] = field(default_factory=dict)  # (kind, pid) -> utime + stime
    host: dict[str, int] = field(default_factory=dict)  # /proc/stat's first line


@dataclass(frozen=True)
class CpuUse:
    seconds: dict[str, float] = field(default_factory=dict)  # kind -> CPU seconds (user + system)
    host: dict[str, int] = field(default_factory=dict)  # ticks of /proc/stat's first line spent in between

    def per_item_ms(self, kind: str, items: int) -> float:
        return 1000.0 * self.seconds.get(kind, 0.0) / items if items else float("nan")

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    @property
    def stolen(self) -> float | None:
        """Share of the host's CPU time stolen by the hypervisor; None when unknown."""
        whole = sum(self.host.values())
        return self.host.get("steal", 0) / whole if whole > 0 else None

    @property
    def busy(self) -> float | None:
        """Share of the host's CPU time spent running something (every process, not only the counted ones)."""
        whole = sum(self.host.values())
        if whole <= 0:
            return None
        return (whole - sum(self.host.get(name, 0) for name in ("idle", "iowait", "steal"))) / whole

    def plus(self, other: CpuUse) -> CpuUse:
        kinds = self.seconds.keys() | other.seconds.keys()
        names = self.host.keys() | other.host.keys()
        return CpuUse(
            {kind: self.seconds.get(kind, 0.0) + other.seconds.get(kind, 0.0) for kind in kinds},
            {name: self.host.get(name, 0) + other.host.get(name, 0) for name in names},
        )


def command_line(pid: int) -> str:
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _process_stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, utime + stime in ticks) of a process; None if it is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
    return int(fields[1]), int(fields[11]) + int(fields[12])  # ppid, utime, stime (fields 4, 14, 15 of man 5 proc)


def host_times() -> dict[str, int]:
    try:
        first = (PROC / "stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return {}
    return {name: int(value) for name, value in zip(_STAT_FIELDS, first[1:], strict=False)}


def pool_kind(kind: str) -> str:
    """The kind under which ``ProcessCpu`` counts the pool processes of a ``kind`` listed in its ``pools``."""
    return f"{kind}: pool"


class ProcessCpu:
    """``classify(command_line) -> kind or None``: which processes count, under which name.

    ``pools``: kinds whose processes fork pool processes with the same command line (a prefork Celery worker). A
    process of such a kind whose parent is of the same kind counts as ``pool_kind(kind)``, so that the worker's
    main process (the consumer: broker, events, handing tasks out) and its pool processes (the tasks) are told
    apart; both together are the worker."""

    def __init__(self, classify: Callable[[str], str | None], *, pools: frozenset[str] = frozenset()) -> None:
        self.classify = classify
        self.pools = pools
        self.available = (PROC / "stat").exists()
        self._hz = os.sysconf("SC_CLK_TCK") if self.available else 100

    def snapshot(self) -> Snapshot:
        if not self.available:
            return Snapshot()
        found: dict[int, tuple[str, int, int]] = {}  # pid -> (kind, parent pid, ticks)
        for entry in PROC.iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            kind = self.classify(command_line(pid))
            if kind is None:
                continue
            stat = _process_stat(pid)
            if stat is not None:
                found[pid] = (kind, *stat)
        ticks: dict[tuple[str, int], int] = {}
        for pid, (kind, parent, used) in found.items():
            if kind in self.pools and parent in found and found[parent][0] == kind:
                kind = pool_kind(kind)
            ticks[(kind, pid)] = used
        return Snapshot(ticks, host_times())

    def between(self, before: Snapshot, after: Snapshot) -> CpuUse:
        seconds: dict[str, float] = {}
        for (kind, pid), used in after.ticks.items():
            delta = used - before.ticks.get((kind, pid), 0)
            seconds[kind] = seconds.get(kind, 0.0) + max(delta, 0) / self._hz
        host: dict[str, int] = {}
        if before.host and after.host:
            host = {name: after.host.get(name, 0) - before.host.get(name, 0) for name in _STAT_FIELDS}
        return CpuUse(seconds, host)


def percent(share: float | None) -> str:
    return "n/a" if share is None else f"{100 * share:.0f} %"
