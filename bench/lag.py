"""Scenario 2 — lag: N every-minute cron schedules of ``echoflow.noop``; how late each run starts and finishes.

EchoFlow, the real processes: ``celery beat`` (EchoFlowScheduler, the 1-second dispatch message), one worker on
``echoflow.system`` (prefork, 1 process: the dispatcher) and one worker on the run queues (prefork,
``--concurrency`` processes, 2 by default as in the issue). N cron schedules ``* * * * *``; once every process is
up, their first slot is set to the next whole minute, and the runs of ``slots`` consecutive slots are measured from
the database: start - slot (``started_at`` - ``slot``) and finish - slot, p50/p95/p99 over all runs of those slots;
sent - slot (``enqueued_at``) is the dispatcher's part of it.

Peer: N django-celery-beat PeriodicTasks on one every-minute CrontabSchedule, real ``celery beat`` with
DatabaseScheduler (bench.lag_peer: each message carries its slot) and one worker, prefork, as many processes,
running a bare no-op that notes start and finish; the same slots are measured the same way, from the worker side.

``--smoke``: 6-field cron ``*/5 * * * * *`` (EchoFlow) and a 5-second IntervalSchedule (beat's crontab has no
seconds), a few slots of a handful of schedules.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from bench.common import Children, percentile, print_table, ratio
from bench.cpu import CpuUse, ProcessCpu, percent, pool_kind
from bench.data import bench_org, copy_rows, schedules_copy, truncate

WORKER_FLAGS = ["-l", "WARNING", "--without-gossip", "--without-mingle"]
RUN_QUEUES = "echoflow.high,echoflow,echoflow.low"


@dataclass
class LagFigures:
    system: str
    expected: int
    sent: list[float]
    start: list[float]
    finish: list[float]
    note: str = ""
    # CPU of each kind of process from each slot until its runs had all finished (``drains``: those seconds).
    cpu: CpuUse | None = None
    drains: list[float] | None = None
    short: str = ""  # the system's name in the CPU table

    def p(self, which: str, q: float) -> float:
        return percentile({"sent": self.sent, "start": self.start, "finish": self.finish}[which], q)


def _wait_for_ping(app_name: str, node: str, deadline: float) -> bool:
    if app_name == "echoflow":
        from echoflow.celery import app
    else:
        from bench.lag_peer import app
    while time.time() < deadline:
        if app.control.ping(destination=[node], timeout=0.5):
            return True
        time.sleep(0.2)
    return False


def _classifier(run_worker: str, beat_app: str) -> Callable[[str], str | None]:
    """Which kind each process of one side is, by its command line (the private redis-server by its port)."""
    port = urlsplit(settings.CELERY_BROKER_URL).port

    def classify(command: str) -> str | None:
        if command.startswith("postgres"):
            return "PostgreSQL"
        if command.split(" ", 1)[0].endswith("redis-server") and f":{port}" in command:
            return "Redis"
        if "celery" not in command:
            return None
        if run_worker in command:
            return "run worker"
        if "echoflow.system" in command:
            return "system worker"
        if f"-A {beat_app} beat" in command:
            return "beat"
        return None

    return classify


# The workers' main processes and their pool processes are counted apart (``pool_kind``), and added up in the table.
WORKERS = frozenset({"run worker", "system worker"})


def _through_slots(
    cpu: ProcessCpu,
    *,
    first: float,
    slots: int,
    period: int,
    count: int,
    finished: Callable[[int], int],
    at_slot: Callable[[int], object] | None = None,
) -> tuple[CpuUse, list[float]]:
    """Sleep through the slots; CPU from each slot until ``finished(k)`` counts its runs (or the next slot).
    ``at_slot(k)``: called at slot ``k`` (the floor's push)."""
    use = CpuUse()
    drains = []
    for k in range(slots):
        slot = first + k * period
        time.sleep(max(0.0, slot - 0.05 - time.time()))
        before = cpu.snapshot()
        if at_slot is not None:
            time.sleep(max(0.0, slot - time.time()))
            at_slot(k)
        while time.time() < slot + period - 0.2 and finished(k) < (k + 1) * count:
            time.sleep(0.25)
        use = use.plus(cpu.between(before, cpu.snapshot()))
        drains.append(time.time() - slot)
    return use, drains


def _first_slot(period: int, lead: float = 3.0) -> float:
    """The next whole ``period`` (epoch seconds) at least ``lead`` seconds away."""
    return float(math.ceil((time.time() + lead) / period) * period)


def echoflow_side(*, count: int, slots: int, period: int, limit: float, concurrency: int, workdir: Path) -> LagFigures:
    from runs.models import DispatcherHeartbeat

    truncate(["runs_runattempt", "runs_run", "schedules_schedule", "events_outboxevent"])
    DispatcherHeartbeat.objects.all().delete()
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    cron = "* * * * *" if period == 60 else f"*/{period} * * * * *"
    far = datetime(2100, 1, 1, tzinfo=UTC)
    schedules_copy(org=bench_org(), count=count, next_run_at=lambda i: far, cron=lambda i: cron)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE schedules_schedule")
    log = workdir / "lag-echoflow.log"
    children = Children()
    started = time.time()
    try:
        children.start(
            ["-m", "celery", "-A", "echoflow", "beat", "-l", "WARNING", "--pidfile", str(workdir / "beat.pid"),
             "-s", str(workdir / "beat-schedule")],
            log=log,
        )  # fmt: skip
        children.start(
            ["-m", "celery", "-A", "echoflow", "worker", "-P", "prefork", "-c", "1", "-Q", "echoflow.system",
             "-n", "bench-dispatcher@%h", *WORKER_FLAGS],
            log=log,
        )  # fmt: skip
        children.start(
            ["-m", "celery", "-A", "echoflow", "worker", "-P", "prefork", "-c", str(concurrency), "-Q", RUN_QUEUES,
             "-n", "bench-runs@%h", *WORKER_FLAGS],
            log=log,
        )  # fmt: skip
        deadline = started + 120
        while not DispatcherHeartbeat.objects.filter(beat_at__gte=datetime.fromtimestamp(started, tz=UTC)).exists():
            if time.time() > deadline:
                return LagFigures("EchoFlow", count * slots, [], [], [], "the dispatcher never ticked")
            time.sleep(0.2)
        if not _wait_for_ping("echoflow", f"bench-runs@{_hostname()}", deadline):
            return LagFigures("EchoFlow", count * slots, [], [], [], "the run worker never answered a ping")
        first = _first_slot(period)
        with connection.cursor() as cursor:
            cursor.execute("UPDATE schedules_schedule SET next_run_at = %s", [datetime.fromtimestamp(first, tz=UTC)])
        window = (datetime.fromtimestamp(first, tz=UTC), datetime.fromtimestamp(first + slots * period, tz=UTC))
        expected = count * slots
        cpu, drains = _through_slots(
            ProcessCpu(_classifier("bench-runs@", "echoflow"), pools=WORKERS), first=first, slots=slots, period=period,
            count=count, finished=lambda k: _finished((window[0], window[0] + timedelta(seconds=(k + 1) * period))),
        )  # fmt: skip
        stop_at = first + (slots - 1) * period + limit
        while time.time() < stop_at:
            if time.time() > window[1].timestamp() and _finished(window) >= expected:
                break
            time.sleep(1.0)
    finally:
        children.stop_all()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT extract(epoch FROM enqueued_at - slot), extract(epoch FROM started_at - slot), "
            "extract(epoch FROM finished_at - slot) FROM runs_run "
            "WHERE slot >= %s AND slot < %s AND finished_at IS NOT NULL",
            list(window),
        )
        rows = cursor.fetchall()
        cursor.execute("SELECT count(*) FROM runs_run WHERE slot >= %s AND slot < %s", list(window))
        written = int(cursor.fetchone()[0])
    note = f"{written:,} runs written" if written != expected else ""
    return LagFigures(
        f"EchoFlow (beat + dispatcher worker, runs worker prefork c={concurrency})",
        expected,
        [float(a) for a, _, _ in rows],
        [float(b) for _, b, _ in rows],
        [float(c) for _, _, c in rows],
        note,
        cpu,
        drains,
        "EchoFlow",
    )


def _finished(window: tuple[datetime, datetime]) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM runs_run WHERE slot >= %s AND slot < %s AND finished_at IS NOT NULL", list(window)
        )
        return int(cursor.fetchone()[0])


def _hostname() -> str:
    import socket

    return socket.gethostname()


def peer_side(*, count: int, slots: int, period: int, limit: float, concurrency: int, workdir: Path) -> LagFigures:
    from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask, PeriodicTasks

    from bench import lag_peer

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.flushdb()
    truncate(["django_celery_beat_periodictask"])  # QuerySet.delete() would signal (one UPDATE) per row
    now = timezone.now()
    template = PeriodicTask(name="", task="bench.lagpeer.noop", queue=lag_peer.QUEUE, enabled=True, last_run_at=now,
                            date_changed=now, kwargs="{}", args="[]")  # fmt: skip
    if period == 60:
        template.crontab = CrontabSchedule.objects.create(
            minute="*", hour="*", day_of_week="*", day_of_month="*", month_of_year="*", timezone="UTC"
        )
    else:
        template.interval, _ = IntervalSchedule.objects.get_or_create(every=period, period=IntervalSchedule.SECONDS)
    copy_rows(PeriodicTask, template, count, lambda i: {"name": f"bench-{i:07d}"})
    PeriodicTasks.update_changed()
    log = workdir / "lag-peer.log"
    children = Children()
    started = time.time()
    try:
        children.start(
            ["-m", "celery", "-A", "bench.lag_peer", "beat", "-S", "bench.lag_peer:SlotScheduler", "-l", "WARNING",
             "--pidfile", str(workdir / "peer-beat.pid"), "-s", str(workdir / "peer-beat-schedule")],
            log=log,
        )  # fmt: skip
        children.start(
            ["-m", "celery", "-A", "bench.lag_peer", "worker", "-P", "prefork", "-c", str(concurrency), "-Q",
             lag_peer.QUEUE,
             "-n", "bench-lagpeer@%h", *WORKER_FLAGS],
            log=log,
        )  # fmt: skip
        if not _wait_for_ping("peer", f"bench-lagpeer@{_hostname()}", started + 120):
            return LagFigures("django-celery-beat", count * slots, [], [], [], "the worker never answered a ping")
        first = _first_slot(period, lead=max(3.0, started + 5 - time.time()))
        end = first + slots * period
        expected = count * slots
        cpu, drains = _through_slots(
            ProcessCpu(_classifier("bench-lagpeer@", "bench.lag_peer"), pools=WORKERS), first=first, slots=slots,
            period=period, count=count, finished=_PeerDone(client, lag_peer.KEY, first, period),
        )  # fmt: skip
        stop_at = first + (slots - 1) * period + limit
        while time.time() < stop_at:
            if time.time() > end and len(_peer_window(client, lag_peer.KEY, first, end)) >= expected:
                break
            time.sleep(1.0)
    finally:
        children.stop_all()
    rows = _peer_window(client, lag_peer.KEY, first, end)
    truncate(["django_celery_beat_periodictask"])
    PeriodicTasks.update_changed()
    kind = "every-minute CrontabSchedule" if period == 60 else f"{period} s IntervalSchedule"
    note = f"{len(rows):,} of {expected:,} done within {limit:.0f} s of the last slot" if len(rows) < expected else ""
    return LagFigures(
        f"django-celery-beat DatabaseScheduler ({kind}), worker prefork c={concurrency}",
        expected,
        [sent - slot for slot, sent, _, _ in rows],
        [start - slot for slot, _, start, _ in rows],
        [finish - slot for slot, _, _, finish in rows],
        note,
        cpu,
        drains,
        "django-celery-beat",
    )


class _PeerDone:
    """How many no-ops of the slots ``first`` .. slot ``k`` have finished, reading only what the list gained."""

    def __init__(self, client: redis.Redis, key: str, first: float, period: int) -> None:
        self.client, self.key, self.first, self.period = client, key, first, period
        self.read = 0
        self.slots: list[float] = []

    def __call__(self, k: int) -> int:
        new = self.client.lrange(self.key, self.read, -1)
        self.read += len(new)
        self.slots.extend(float(raw.split()[0]) for raw in new)
        end = self.first + (k + 1) * self.period - 0.5
        return sum(1 for slot in self.slots if self.first - 0.5 <= slot < end)


def floor_side(
    *, count: int, slots: int, period: int, limit: float, concurrency: int, workdir: Path, fixes: bool
) -> LagFigures:
    """Celery alone: at each slot the orchestrator pushes ``count`` ready-made no-op messages in one pipeline (what
    a scheduler that costs nothing would do), and the peer's worker (same pool and processes) runs them. No
    database, no beat: how late 1,000 tasks due at once start on this machine with Celery itself, the floor under
    any scheduler built on it. ``fixes``: the worker with EchoFlow's broker transport and consumer."""
    from bench import celery_peer, lag_peer
    from bench.fast_send import Messages, collect_messages, push_messages

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.flushdb()
    env = celery_peer.worker_env(fixes=fixes)
    name = "Celery alone, messages pushed at the slot" + (" (with EchoFlow's fixes)" if fixes else "")
    node = f"bench-lagfloor{'-fixed' if fixes else ''}@{_hostname()}"
    children = Children()
    started = time.time()
    pushed: list[float] = []
    try:
        children.start(
            ["-m", "celery", "-A", "bench.lag_peer", "worker", "-P", "prefork", "-c", str(concurrency), "-Q",
             lag_peer.QUEUE, "-n", node, *WORKER_FLAGS],
            log=workdir / "lag-floor.log", env=env,
        )  # fmt: skip
        if not _wait_for_ping("peer", node, started + 120):
            return LagFigures(name, count * slots, [], [], [], "the worker never answered a ping")
        first = _first_slot(period)

        # Every message built beforehand, as the peer's app would send it (headers, queue, delivery tag)...
        def slot_messages(k: int) -> Messages:
            def send(producer: Any) -> None:
                for _ in range(count):
                    lag_peer.noop.apply_async(kwargs={"slot": first + k * period, "sent": 0.0}, producer=producer)

            return collect_messages(lag_peer.app, send)

        batches = [slot_messages(k) for k in range(slots)]
        # ...then each slot's pushed in one pipelined round trip at the slot.
        expected = count * slots
        done = _PeerDone(client, lag_peer.KEY, first, period)

        def push(k: int) -> None:
            push_messages(client, batches[k])
            pushed.append(time.time() - (first + k * period))

        cpu, drains = _through_slots(
            ProcessCpu(_classifier(node.split("@")[0] + "@", "-"), pools=WORKERS), first=first, slots=slots,
            period=period, count=count, finished=done, at_slot=push,
        )  # fmt: skip
        stop_at = first + (slots - 1) * period + limit
        while time.time() < stop_at and done(slots - 1) < expected:
            time.sleep(1.0)
    finally:
        children.stop_all()
    rows = _peer_window(client, lag_peer.KEY, first, first + slots * period)
    note = f"{len(rows):,} of {expected:,} done within {limit:.0f} s of the last slot" if len(rows) < expected else ""
    return LagFigures(
        f"{name}, worker prefork c={concurrency}",
        expected,
        # "sent": when the slot's pipeline had been written (the same for each message of a slot).
        [pushed[round((slot - first) / period)] for slot, _, _, _ in rows],
        [start - slot for slot, _, start, _ in rows],
        [finish - slot for slot, _, _, finish in rows],
        note,
        cpu,
        drains,
        "Celery alone" + (" with EchoFlow's fixes" if fixes else ""),
    )


def _peer_window(client: redis.Redis, key: str, first: float, end: float) -> list[tuple[float, float, float, float]]:
    rows = []
    for raw in client.lrange(key, 0, -1):
        slot, sent, start, finish = (float(x) for x in raw.split())
        # An interval entry's slots drift with its sends: half a second of slack keeps the first one in.
        if first - 0.5 <= slot < end - 0.5:
            rows.append((slot, sent, start, finish))
    return rows


def run(
    *, count: int, slots: int, period: int, limit: float, concurrency: int, workdir: Path, floor: bool = True
) -> None:
    """``concurrency``: the run worker's processes, EchoFlow's and the peer's alike (the issue's figure is 2).
    ``floor``: also Celery alone, messages pushed at the slot, bare and with EchoFlow's fixes (``floor_side``)."""
    ours = echoflow_side(count=count, slots=slots, period=period, limit=limit, concurrency=concurrency, workdir=workdir)
    peer = peer_side(count=count, slots=slots, period=period, limit=limit, concurrency=concurrency, workdir=workdir)
    floors = [
        floor_side(
            count=count, slots=slots, period=period, limit=limit, concurrency=concurrency, workdir=workdir, fixes=fixes
        )
        for fixes in ((False, True) if floor else ())
    ]
    rows = []
    for figures in (ours, peer, *floors):
        rows.append(
            [
                figures.system,
                figures.expected,
                len(figures.start),
                f"{figures.p('sent', 50):.2f}",
                f"{figures.p('sent', 99):.2f}",
                *(f"{figures.p('start', q):.2f}" for q in (50, 95, 99)),
                *(f"{figures.p('finish', q):.2f}" for q in (50, 95, 99)),
                ratio(figures.p("start", 99), peer.p("start", 99)),
                figures.note,
            ]
        )
    print_table(
        f"lag: {count:,} schedules, {slots} slots {period} s apart, seconds after the slot",
        ["system", "runs due", "done", "sent p50", "sent p99", "start p50", "start p95", "start p99", "finish p50",
         "finish p95", "finish p99", "p99 start vs beat", "note"],
        rows,
    )  # fmt: skip
    kinds = ["run worker", "system worker", "beat", "PostgreSQL", "Redis"]
    cpu_rows = []
    for figures in (ours, peer, *floors):
        if figures.cpu is None or not figures.drains:
            continue
        runs = count * len(figures.drains)
        use = figures.cpu

        def ms(*names: str, use: CpuUse = use, runs: int = runs) -> str:
            if not any(name in use.seconds for name in names):
                return "—"
            return f"{sum(use.per_item_ms(name, runs) for name in names):.2f}"

        cpu_rows.append(
            [
                figures.short or figures.system,
                f"{sum(figures.drains) / len(figures.drains):.2f}",
                *(ms(kind, pool_kind(kind)) if kind in WORKERS else ms(kind) for kind in kinds),
                ms("run worker"),
                ms(pool_kind("run worker")),
                f"{1000 * use.total / runs:.2f}",
                percent(use.busy),
                percent(use.stolen),
            ]
        )
    if cpu_rows:
        print_table(
            "lag: CPU from each slot until its runs had finished, ms per run (user + system, from /proc); the run "
            "worker is its main process (the consumer) and its pool processes (the tasks)",
            ["system", "drain s", *kinds, "run worker: main", "run worker: pool", "total", "host busy", "host stolen"],
            cpu_rows,
        )
