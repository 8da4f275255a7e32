"""Scenario 3 — memory: the dispatcher's peak RSS and cold start with N schedules, most of them not due.

EchoFlow, the real processes: ``celery beat`` (EchoFlowScheduler) and one worker on ``echoflow.system`` (prefork,
1 pool process, or the threads pool with 2 threads: the dispatcher); or, with ``beat="embedded"``, that worker
alone with beat inside it (``celery worker -B``: beat runs in a process forked from the worker, sharing its pages).
N cron schedules, copied in: ``DUE`` of them ``* * * * * *`` and due now (runs
every tick), the rest due some time in the next 30 days. Cold start = from starting the processes until the
first tick's DispatcherHeartbeat row. Then they idle through ``idle`` seconds of ticks.

Peer: django-celery-beat's ``celery beat`` (DatabaseScheduler, via bench.lag_peer) with N PeriodicTasks on a
daily interval, not due, plus one 1-second probe task; cold start = until the probe's first message is in
Redis. It loads every entry into memory at start, so it is stopped at ``peer_limit`` seconds, and no larger N is
tried after that.

Peak RSS (Linux ``/proc``): each process's VmHWM (its own high-water mark), summed over the process and its
children (the worker's pool process): shared pages of the forked pool are counted twice, so this is an upper
bound. PSS (``smaps_rollup``, shared pages split between processes), sampled every half second, is the fairer
total; its peak is given too.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from bench.common import Children, print_table, ratio
from bench.data import bench_org, copy_rows, schedules_copy, truncate

DUE = 10
SAMPLE = 0.5
WORKER_FLAGS = ["-l", "WARNING", "--without-gossip", "--without-mingle"]


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid …": comm may hold spaces and parentheses; the fields after the last ')' do not.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class TreeMemory:
    """Peak memory of a process and its descendants, sampled."""

    root: int
    hwm_kb: dict[int, int] = field(default_factory=dict)
    peak_pss_kb: int = 0

    def sample(self) -> None:
        pids, queue = [], [self.root]
        while queue:
            pid = queue.pop()
            pids.append(pid)
            queue.extend(children_of(pid))
        for pid in pids:
            self.hwm_kb[pid] = max(self.hwm_kb.get(pid, 0), _status_kb(pid, "VmHWM"))
        self.peak_pss_kb = max(self.peak_pss_kb, sum(_pss_kb(pid) for pid in pids))

    @property
    def processes(self) -> int:
        return len([v for v in self.hwm_kb.values() if v])

    @property
    def hwm_mb(self) -> float:
        return sum(self.hwm_kb.values()) / 1024

    @property
    def pss_mb(self) -> float:
        return self.peak_pss_kb / 1024


@dataclass
class MemoryFigures:
    system: str
    variant: str
    count: int
    parts: dict[str, TreeMemory]
    cold_start_s: float | None
    note: str = ""

    @property
    def hwm_mb(self) -> float:
        return sum(t.hwm_mb for t in self.parts.values())

    @property
    def pss_mb(self) -> float:
        return sum(t.pss_mb for t in self.parts.values())


def _sample_all(parts: dict[str, TreeMemory]) -> None:
    for tree in parts.values():
        tree.sample()


def schedules_generate(count: int) -> float:
    """COPY ``count`` schedules, ``DUE`` of them due every second; returns the seconds it took."""
    truncate(["runs_runattempt", "runs_run", "schedules_schedule", "events_outboxevent"])
    now = timezone.now()
    spread = 30 * 24 * 3600 - 3600

    def next_run_at(i: int) -> datetime:
        # Due now (every second), or spread over the next 30 days, an hour away at least.
        return now if i < DUE else now + timedelta(seconds=3600 + (i * 7919) % spread)

    started_copy = time.monotonic()
    schedules_copy(
        org=bench_org(), count=count, next_run_at=next_run_at, cron=lambda i: "* * * * * *" if i < DUE else "0 0 * * *"
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE schedules_schedule")
    return time.monotonic() - started_copy


def echoflow_side(*, count: int, pool: str, beat: str, copied: float, idle: float, workdir: Path) -> MemoryFigures:
    from runs.models import DispatcherHeartbeat
    from schedules.models import Schedule

    truncate(["runs_runattempt", "runs_run", "events_outboxevent"])
    DispatcherHeartbeat.objects.all().delete()
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    Schedule.objects.filter(cron="* * * * * *").update(next_run_at=timezone.now())
    log = workdir / "memory-echoflow.log"
    children = Children()
    cold: float | None = None
    started = time.time()
    parts: dict[str, TreeMemory] = {}
    embedded = beat == "embedded"
    if not embedded:
        beat_process = children.start(
            ["-m", "celery", "-A", "echoflow", "beat", "-l", "WARNING", "--pidfile", str(workdir / "beat.pid"),
             "-s", str(workdir / "beat-schedule")],
            log=log,
        )  # fmt: skip
        parts["beat"] = TreeMemory(beat_process.pid)
    worker = children.start(
        ["-m", "celery", "-A", "echoflow", "worker", "-P", pool, "-c", "1" if pool == "prefork" else "2",
         "-Q", "echoflow.system", "-n", "bench-dispatcher@%h", *WORKER_FLAGS,
         *(["-B", "-s", str(workdir / "beat-schedule")] if embedded else [])],
        log=log,
    )  # fmt: skip
    parts["dispatcher worker"] = TreeMemory(worker.pid)
    from echoflow.celery import app

    node = f"bench-dispatcher@{socket.gethostname()}"
    worker_up: float | None = None
    try:
        deadline = started + 120
        while time.time() < deadline and cold is None:
            _sample_all(parts)
            # Where the cold start goes: until the worker answers a ping, then until its first tick is done.
            if worker_up is None and app.control.ping(destination=[node], timeout=0.3):
                worker_up = time.time() - started
            beat_at = DispatcherHeartbeat.objects.filter(name="dispatcher").values_list("beat_at", flat=True).first()
            if beat_at is not None:
                cold = beat_at.timestamp() - started
            else:
                time.sleep(0.1)
        idle_until = time.time() + idle
        while time.time() < idle_until:
            _sample_all(parts)
            time.sleep(SAMPLE)
        _sample_all(parts)
    finally:
        children.stop_all()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM runs_run")
        runs = int(cursor.fetchone()[0])
    up = "no answer to a ping before its first tick" if worker_up is None else f"answered a ping at {worker_up:.1f} s"
    note = f"{count:,} rows copied in {copied:.1f} s; worker: {up}; {runs:,} runs written"
    concurrency = "1 process" if pool == "prefork" else "2 threads"
    variant = f"{pool}, beat {'inside (-B)' if embedded else 'apart'}"
    system = f"EchoFlow (system worker {pool}, {concurrency}; beat {'inside it, -B' if embedded else 'apart'})"
    return MemoryFigures(system, variant, count, parts, cold, note)


def peer_side(*, count: int, limit: float, workdir: Path) -> MemoryFigures:
    from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

    from bench import lag_peer

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.flushdb()
    truncate(["django_celery_beat_periodictask"])
    now = timezone.now()
    # Daily intervals, last run now: not due. (Not crontabs of another hour: django-celery-beat >= 2.8 leaves
    # those out of its in-memory schedule until their hour, so they would not show what loading N entries costs.)
    daily, _ = IntervalSchedule.objects.get_or_create(every=86400, period=IntervalSchedule.SECONDS)
    template = PeriodicTask(name="", task="bench.lagpeer.noop", queue=lag_peer.QUEUE, enabled=True, interval=daily,
                            last_run_at=now, date_changed=now, kwargs="{}", args="[]")  # fmt: skip
    started_copy = time.monotonic()
    copy_rows(PeriodicTask, template, count, lambda i: {"name": f"bench-{i:07d}"})
    copied = time.monotonic() - started_copy
    every_second, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="bench-probe", task="bench.lagpeer.noop", queue=lag_peer.PROBE_QUEUE,
                                interval=every_second, last_run_at=now - timedelta(seconds=2))  # fmt: skip
    PeriodicTasks.update_changed()
    log = workdir / "memory-peer.log"
    children = Children()
    cold: float | None = None
    started = time.time()
    beat = children.start(
        ["-m", "celery", "-A", "bench.lag_peer", "beat", "-S", "bench.lag_peer:SlotScheduler", "-l", "WARNING",
         "--pidfile", str(workdir / "peer-beat.pid"), "-s", str(workdir / "peer-beat-schedule")],
        log=log,
    )  # fmt: skip
    parts = {"beat": TreeMemory(beat.pid)}
    try:
        while time.time() < started + limit and cold is None and beat.poll() is None:
            _sample_all(parts)
            if client.llen(lag_peer.PROBE_QUEUE):
                cold = time.time() - started
            else:
                time.sleep(0.1)
        _sample_all(parts)
        exited = beat.poll()
    finally:
        children.stop_all()
    truncate(["django_celery_beat_periodictask"])
    PeriodicTasks.update_changed()
    note = f"{count:,} rows copied in {copied:.1f} s"
    if cold is None and exited is not None:
        note += f"; beat exited with status {exited} before its first send"
    elif cold is None:
        note += f"; no first send within {limit:.0f} s: stopped there"
    return MemoryFigures("django-celery-beat", "beat", count, parts, cold, note)


def run(
    *,
    sizes: list[int],
    pools: list[str],
    beats: list[str],
    idle: float,
    peer_max: int,
    peer_limit: float,
    workdir: Path,
) -> None:
    ours: list[MemoryFigures] = []
    variants = [(pool, beat) for beat in beats for pool in pools]
    for n in sizes:
        copied = schedules_generate(n)
        ours.extend(
            echoflow_side(count=n, pool=pool, beat=beat, copied=copied, idle=idle, workdir=workdir)
            for pool, beat in variants
        )
    peers: list[MemoryFigures] = []
    for n in sizes:
        if n > peer_max:
            break
        peers.append(peer_side(count=n, limit=peer_limit, workdir=workdir))
        if peers[-1].cold_start_s is None:
            break  # a larger N would only take longer
    truncate(["runs_runattempt", "runs_run", "schedules_schedule", "events_outboxevent"])
    by_count = {p.count: p for p in peers}
    rows = []
    for figures in [*ours, *peers]:
        peer = by_count.get(figures.count)
        beat_part = figures.parts.get("beat")
        worker = figures.parts.get("dispatcher worker")
        rows.append(
            [
                figures.system,
                figures.count,
                f"{beat_part.hwm_mb:.0f}" if beat_part else "in the worker",
                f"{worker.hwm_mb:.0f} ({worker.processes} proc)" if worker else "—",
                f"{figures.hwm_mb:.0f}",
                f"{figures.pss_mb:.0f}",
                "—" if figures.cold_start_s is None else f"{figures.cold_start_s:.2f}",
                ratio(figures.hwm_mb, peer.hwm_mb) if peer and figures is not peer else "—",
                figures.note,
            ]
        )
    first = [f for f in ours if f.count == sizes[0]]
    last = [f for f in ours if f.count == sizes[-1]]
    growth = ", ".join(
        f"{a.variant}: {(b.hwm_mb / a.hwm_mb - 1) * 100:+.1f} %" if a.hwm_mb else "n/a"
        for a, b in zip(first, last, strict=True)
    )
    print_table(
        f"memory: peak RSS (MB) and cold start by number of schedules; EchoFlow {sizes[0]:,} → {sizes[-1]:,} "
        f"({growth})",
        ["system", "N", "beat MB", "dispatcher worker MB", "total MB (sum of VmHWM)", "total PSS MB", "cold start s",
         "total vs beat", "note"],
        rows,
    )  # fmt: skip
