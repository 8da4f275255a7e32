"""Scenario 1 — dispatch: N schedules due in the same second, versus N django-celery-beat PeriodicTasks.

EchoFlow: N cron schedules (``ss mm * * * *``, hourly at the slot's second) with ``next_run_at`` = the slot,
two dispatcher processes (bench.dispatcher_loop) taking one tick a second in turn, ``DISPATCH_OFFSET`` (10 ms) after
the whole second, as beat sends the dispatch message in production (echoflow.beat) and a free system worker takes
it: the first at the slot's second, the second one second later if runs are left.
Measured from the slot: when all N runs are in the database and when the broker holds messages for all N (the
private Redis's queues read as they grow; a burst goes out as messages of several runs, runs.sending); then
duplicates (runs per (schedule, slot), runs carried by more than one message).

Peer: N PeriodicTasks on one CrontabSchedule (every minute), driven by DatabaseScheduler in bench.beat_peer with
its clock at the due minute; measured from the slot until N messages (one task each) are in Redis, or the time
limit.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
from django.conf import settings
from django.db import connection

from bench.common import PYTHON, ROOT, Children, print_table, ratio
from bench.data import bench_org, schedules_copy, truncate
from echoflow.beat import DISPATCH_OFFSET
from runs.sending import EXECUTE_RUN, EXECUTE_RUNS

POLL = 0.02


@dataclass
class DispatchFigures:
    system: str
    count: int
    written_s: float | None
    enqueued_s: float | None
    messages: int
    runs: int
    duplicates: int
    note: str = ""

    @property
    def done_s(self) -> float | None:
        if self.written_s is None or self.enqueued_s is None:
            return None
        return max(self.written_s, self.enqueued_s)

    @property
    def slots_per_s(self) -> float:
        done = self.done_s
        if done is not None and done > 0:
            return self.count / done
        return float("nan")


class BrokerTally:
    """The messages in every queue of the private Redis and what they carry, read as the queues grow: nothing
    consumes them during the scenario, and kombu pushes each new message at the head of its queue's list.

    ``items``: one per task, except that an EchoFlow run message counts the runs it carries (``execute_runs``
    carries several); ``run_ids``: those runs' ids, to find a run sent twice."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.read: dict[bytes, int] = {}
        self.messages = 0
        self.items = 0
        self.run_ids: list[int] = []

    def update(self) -> int:
        for key in self.client.scan_iter(count=1000):
            if self.client.type(key) != b"list":
                continue
            length = int(self.client.llen(key))
            new = length - self.read.get(key, 0)
            if new > 0:
                for raw in self.client.lrange(key, 0, new - 1):
                    self._add(raw)
                self.read[key] = length
        return self.items

    def _add(self, raw: bytes) -> None:
        message = json.loads(raw)
        self.messages += 1
        task = (message.get("headers") or {}).get("task")
        if task not in (EXECUTE_RUN, EXECUTE_RUNS):
            self.items += 1
            return
        arg = json.loads(base64.b64decode(message["body"]))[0][0]
        ids = [int(pk) for pk in arg] if task == EXECUTE_RUNS else [int(arg)]
        self.run_ids.extend(ids)
        self.items += len(ids)


def _run_count() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM runs_run")
        return int(cursor.fetchone()[0])


def _wait(
    *, slot: float, count: int, until: float, tally: BrokerTally, count_runs: bool
) -> tuple[float | None, float | None]:
    written = enqueued = None
    while time.time() < until and (written is None or enqueued is None):
        now = time.time()
        if count_runs and written is None and _run_count() >= count:
            written = time.time() - slot
        if enqueued is None and tally.update() >= count:
            enqueued = time.time() - slot
        if now < slot:
            time.sleep(min(POLL, slot - now))
        else:
            time.sleep(POLL)
    return written, enqueued


def echoflow_side(*, count: int, dispatchers: int, sender: str, limit: float, log: Path) -> DispatchFigures:
    truncate(["runs_run", "schedules_schedule", "events_outboxevent"])
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.flushdb()
    org = bench_org()
    # Not due yet: the slot is set once the dispatchers are up (a running dispatcher is there before the slot).
    far = datetime(2100, 1, 1, tzinfo=UTC)
    schedules_copy(org=org, count=count, next_run_at=lambda i: far, cron=lambda i: "0 0 1 1 *")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE schedules_schedule")
    children = Children()
    until = time.time() + 120 + limit
    try:
        ready = []
        for i in range(dispatchers):
            # Dispatcher i takes the ticks of the seconds i, i + dispatchers, ...: one tick a second in all.
            phase = i + DISPATCH_OFFSET
            ready.append(log.parent / f"dispatcher-{sender}-{i}.ready")
            children.start(
                ["-m", "bench.dispatcher_loop", "--until", str(until), "--interval", str(dispatchers),
                 "--phase", f"{phase:.3f}", "--sender", sender, "--ready", str(ready[-1])],
                log=log,
            )  # fmt: skip
        deadline = time.time() + 120
        while not all(path.exists() for path in ready) and time.time() < deadline:
            time.sleep(0.1)
        slot_ts = float(int(time.time() + 1.5) + 1)
        slot = datetime.fromtimestamp(slot_ts, tz=UTC)
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE schedules_schedule SET next_run_at = %s, cron = %s",
                [slot, f"{slot.second} {slot.minute} * * * *"],
            )
        note = "" if time.time() < slot_ts else "the slot passed while it was being set"
        tally = BrokerTally(client)
        written, enqueued = _wait(slot=slot_ts, count=count, until=slot_ts + limit, tally=tally, count_runs=True)
        time.sleep(1.5)  # a late duplicate would show up now
    finally:
        children.stop_all()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*), count(DISTINCT (schedule_id, slot)) FROM runs_run")
        runs, distinct = cursor.fetchone()
    tally.update()
    messages = tally.messages
    duplicates = (runs - distinct) + (len(tally.run_ids) - len(set(tally.run_ids)))
    if messages != tally.items:
        note = ", ".join(filter(None, [note, f"{tally.items:,} runs in {messages:,} messages"]))
    return DispatchFigures(
        f"EchoFlow ({dispatchers} dispatchers, {sender} send)", count, written, enqueued, messages, runs, duplicates,
        note,
    )  # fmt: skip


def beat_side(*, count: int, limit: float, log: Path) -> DispatchFigures:
    from django_celery_beat.models import CrontabSchedule, PeriodicTask, PeriodicTasks

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.flushdb()
    truncate(["django_celery_beat_periodictask"])  # QuerySet.delete() would signal (one UPDATE) per row
    crontab = CrontabSchedule.objects.create(minute="*", hour="*", day_of_week="*", day_of_month="*",
                                             month_of_year="*", timezone="UTC")  # fmt: skip
    due = datetime(2030, 1, 1, tzinfo=UTC)
    last = due - timedelta(seconds=30)
    PeriodicTask.objects.bulk_create(
        [
            PeriodicTask(name=f"bench-{i:07d}", task="bench.noop", crontab=crontab, queue="beatpeer", last_run_at=last)
            for i in range(count)
        ],
        batch_size=5000,
    )
    PeriodicTasks.update_changed()
    children = Children()
    started = time.time()
    proc = subprocess.Popen(
        [PYTHON, "-m", "bench.beat_peer", "--due", str(due.timestamp()), "--until", str(started + 600 + limit)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=open(log, "ab"),  # noqa: SIM115
        start_new_session=True,
    )
    children.procs.append(proc)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            return DispatchFigures("django-celery-beat DatabaseScheduler", count, None, None, 0, 0, 0, "beat failed")
        info = json.loads(line)
        slot_ts = float(info["slot"])
        tally = BrokerTally(client)
        _, enqueued = _wait(slot=slot_ts, count=count, until=slot_ts + limit, tally=tally, count_runs=False)
        if enqueued is not None:
            time.sleep(1.5)
    finally:
        children.stop_all()
    tally.update()
    messages = tally.messages
    note = f"loading {count:,} entries took {info['load_s']:.1f} s"
    if enqueued is None:
        note += f"; {messages:,} of {count:,} sent after the {limit:.0f} s limit"
    truncate(["django_celery_beat_periodictask"])
    PeriodicTasks.update_changed()
    return DispatchFigures(
        "django-celery-beat DatabaseScheduler", count, enqueued, enqueued, messages, messages,
        max(0, messages - count), note,
    )  # fmt: skip


def run(*, count: int, dispatchers: int, senders: list[str], limit: float, peer_limit: float, workdir: Path) -> None:
    log = workdir / "dispatch.log"
    results = [
        echoflow_side(count=count, dispatchers=dispatchers, sender=sender, limit=limit, log=log) for sender in senders
    ]
    peer = beat_side(count=count, limit=peer_limit, log=log)
    rows = []
    for figures in [*results, peer]:
        rows.append(
            [
                figures.system,
                figures.count,
                "—" if figures.written_s is None else f"{figures.written_s:.2f}",
                "—" if figures.enqueued_s is None else f"{figures.enqueued_s:.2f}",
                figures.slots_per_s if figures.done_s else f"< {figures.messages / peer_limit:,.0f}",
                figures.messages,
                figures.duplicates,
                ratio(figures.slots_per_s, peer.slots_per_s)
                if figures.done_s and peer.done_s
                else (
                    f"> {figures.slots_per_s / (peer.messages / peer_limit):.1f}x"
                    if figures.done_s and peer.messages
                    else "n/a"
                ),
                figures.note,
            ]
        )
    print_table(
        f"dispatch: {count:,} schedules due in one second",
        ["system", "N", "written s", "enqueued s", "slots/s", "messages", "duplicates", "vs beat", "note"],
        rows,
    )
