"""The chaos test: real beats, dispatchers and workers on PostgreSQL + Redis, killed and starved at random, then
checked from the database and the event stream.

Processes talk to PostgreSQL through a cuttable proxy and to a private redis-server, so outages hit only them.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from django.conf import settings
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from echoflow.accounts.services import organization_get_or_create
from echoflow.chaos.proxy import CuttableProxy
from echoflow.events.models import OutboxEvent
from echoflow.private_redis import PrivateRedis
from echoflow.system_tasks import system_tasks_install
from runs.models import FINAL_STATUSES, AttemptOutcome, Run, RunAttempt, RunStatus
from schedules.models import Schedule, ScheduleState
from schedules.services import schedule_create

ROOT = Path(__file__).resolve().parent.parent.parent
FINAL_EVENT = {
    RunStatus.SUCCEEDED: "run.succeeded",
    RunStatus.FAILED: "run.failed",
    RunStatus.TIMED_OUT: "run.timed_out",
    RunStatus.CANCELLED: "run.cancelled",
    RunStatus.SKIPPED: "run.skipped",
}


@dataclass
class ChaosConfig:
    schedules: int = 300
    duration: float = 180.0
    kill_every: float = 5.0
    outage: float = 25.0
    settle: float = 120.0
    worker_concurrency: int = 2  # pool processes of each executing worker
    pace: float = 1.0  # multiplies every schedule's interval
    seed: int = 7
    keep: bool = False
    redis_port: int = 0  # 0: a free port, so no process of an earlier run can reach this run's Redis


@dataclass
class Figures:
    slots_expected: int = 0
    runs: int = 0
    duplicates: int = 0
    missing: int = 0
    explained_missed: int = 0
    stuck: int = 0
    attempts_unaccounted: int = 0
    events_missing: int = 0
    events_duplicated: int = 0
    final_events_wrong: int = 0
    kills: int = 0
    settled_seconds: float | None = None  # None: not quiescent within the settle time
    dispatch_lagging: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def violations(self) -> int:
        return (
            self.duplicates
            + self.dispatch_lagging
            + self.missing
            + self.stuck
            + self.attempts_unaccounted
            + self.events_missing
            + self.events_duplicated
            + self.final_events_wrong
        )


class Fleet:
    """The EchoFlow processes under test, each restartable by name."""

    def __init__(self, env: dict[str, str], workdir: Path, worker_concurrency: int = 2) -> None:
        self.env = env
        self.workdir = workdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        celery = [sys.executable, "-m", "celery", "-A", "echoflow"]
        tag = workdir.name.rsplit("-", 1)[-1]  # unique node names per run
        run_queues = ",".join(settings.RUN_QUEUES[k] for k in ("high", "default", "low"))
        self.commands: dict[str, list[str]] = {}
        for i in (1, 2):
            self.commands[f"beat{i}"] = [
                *celery,
                "beat",
                "-l",
                "warning",
                "--pidfile=",
                "-s",
                str(workdir / f"beat{i}-schedule"),
            ]
            self.commands[f"dispatcher{i}"] = [
                *celery,
                "worker",
                "-Q",
                "echoflow.system",
                "-c",
                "1",
                "-n",
                f"dispatcher{i}-{tag}@%h",
                "-l",
                "warning",
            ]
            self.commands[f"worker{i}"] = [
                *celery,
                "worker",
                "-Q",
                run_queues,
                "-c",
                str(worker_concurrency),
                "-n",
                f"worker{i}-{tag}@%h",
                "-l",
                "warning",
            ]

    def start(self, name: str) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            self.commands[name], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def start_all(self) -> None:
        for name in self.commands:
            self.start(name)

    def kill(self, name: str) -> None:
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def ensure_running(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                self.start(name)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _create_schedules(org_id: int, count: int, rng: random.Random, now: datetime, pace: float = 1.0) -> None:
    """A mix of schedules; ``pace`` stretches every interval (2: half as many runs), so that the load fits the
    machine: the test is about correctness under fire, and a backlog the workers cannot drain proves nothing."""
    from echoflow.accounts.models import Organization

    def every(seconds: float) -> int:
        return max(1, round(seconds * pace))

    crons = ["*/5 * * * * *", "*/10 * * * * *", "* * * * *"]
    if pace >= 2:
        crons = ["*/10 * * * * *", "*/20 * * * * *", "*/30 * * * * *", "* * * * *"]

    org = Organization.objects.get(pk=org_id)
    policies = ["coalesce", "all", "skip"]
    overlaps = ["skip", "buffer_one", "buffer_all", "cancel_other", "allow_all"]
    for i in range(count):
        kind = i % 10
        data: dict[str, Any] = {
            "name": f"chaos {i:04d}",
            "misfire_policy": policies[i % 3],
            "catchup_window_seconds": 3600,
            "max_attempts": 3,
            "backoff_seconds": [1, 2, 4],
            "timeout_seconds": 30,
            "priority": rng.randint(0, 9),
        }
        if kind < 4:
            data.update(
                trigger_kind="interval",
                interval_seconds=every(rng.choice([3, 5, 7, 11])),
                action_name="echoflow.noop",
            )
        elif kind < 6:
            data.update(
                trigger_kind="cron",
                cron=rng.choice(crons),
                action_name="echoflow.echo",
                payload={"i": i},
            )
        elif kind < 7:
            data.update(
                trigger_kind="interval",
                interval_seconds=every(6),
                action_name="echoflow.fail",
                payload={"message": f"chaos failure {i}"},
            )
        elif kind < 9:
            data.update(
                trigger_kind="interval",
                interval_seconds=every(4),
                action_name="echoflow.sleep",
                payload={"seconds": rng.choice([0.2, 0.5, 1.5])},
                max_concurrency=1,
                overlap_policy=overlaps[i % len(overlaps)],
            )
        else:
            data.update(
                trigger_kind="once",
                run_at=(now + timedelta(seconds=rng.randint(5, 60))).isoformat(),
                action_name="echoflow.noop",
            )
        schedule_create(organization=org, data=data, now=now)


def _raise_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(f"chaos: stopped by signal {signum}")


def run_chaos(config: ChaosConfig, log: Callable[[str], None]) -> Figures:
    if connection.vendor != "postgresql":
        raise RuntimeError("the chaos test needs PostgreSQL: set DATABASE_URL=postgres://…")
    # A SIGTERM (CI's timeout, a Ctrl-C from a supervisor) must still stop every process this test started.
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    rng = random.Random(config.seed)
    workdir = Path(tempfile.mkdtemp(prefix="echoflow-chaos-"))
    figures = Figures()
    db = connection.settings_dict
    proxy = CuttableProxy((db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432)))
    # Persistent like the production Redis in docker-compose.yml: a restart keeps stream and queues.
    private_redis = PrivateRedis(workdir, port=config.redis_port, persistent=True)
    private_redis.start()
    proxy_port = proxy.start()
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"CELERY_BROKER_URL", "EVENTS_REDIS_URL"}},
        "DATABASE_URL": f"postgres://{db['USER']}{password}@127.0.0.1:{proxy_port}/{db['NAME']}",
        # Persistent connections (with Django's health check before reuse): a broken one after the cut is
        # replaced, and the proxy does not pay a PostgreSQL connection per task.
        "DATABASE_CONN_MAX_AGE": "60",
        "REDIS_URL": private_redis.url,
        # As in production: DEBUG keeps every query in memory and slows every process.
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(32),
        "ECHOFLOW_VAR_DIR": str(workdir / "var"),
        "ECHOFLOW_MIN_INTERVAL_SECONDS": "1",
        "ECHOFLOW_HEARTBEAT_STALE": "3",
        "ECHOFLOW_RESEND_AFTER": "30",
        "ECHOFLOW_VISIBILITY_TIMEOUT": "60",
        "ECHOFLOW_SHUTDOWN_GRACE": "5",  # stop_all gives the fleet 20 s
    }
    original = settings.ECHOFLOW
    settings.ECHOFLOW = {**original, "MIN_INTERVAL_SECONDS": 1}
    org = organization_get_or_create(name=f"Chaos {int(time.time())}", slug=f"chaos-{int(time.time())}")
    org.max_concurrent_runs = 40
    org.save(update_fields=["max_concurrent_runs"])
    system_tasks_install()
    start = timezone.now()
    _create_schedules(org.pk, config.schedules, rng, start, config.pace)
    settings.ECHOFLOW = original
    log(f"chaos: {config.schedules} schedules in org {org.slug}; logs in {workdir}")

    fleet = Fleet(env, workdir, config.worker_concurrency)
    fleet.start_all()
    began = time.monotonic()
    redis_done = pg_done = False
    try:
        while (elapsed := time.monotonic() - began) < config.duration:
            if not redis_done and elapsed > config.duration / 3:
                log(f"chaos: stopping Redis for {config.outage:.0f} s")
                private_redis.stop(crash=True)
                time.sleep(config.outage)
                private_redis.start()
                redis_done = True
                log("chaos: Redis is back")
            elif not pg_done and elapsed > 2 * config.duration / 3:
                log(f"chaos: cutting PostgreSQL for {config.outage:.0f} s")
                proxy.cut()
                time.sleep(config.outage)
                proxy.restore()
                pg_done = True
                log("chaos: PostgreSQL is back")
            # Wait for the next kill (never past the end of the chaos phase), then kill -9 a random process.
            time.sleep(min(config.kill_every, max(config.duration - (time.monotonic() - began), 0.0)))
            if time.monotonic() - began >= config.duration:
                break
            victim = rng.choice(sorted(fleet.commands))
            fleet.kill(victim)
            figures.kills += 1
            time.sleep(rng.uniform(0.5, 1.5))
            fleet.ensure_running()
        # No more violence. Stop new slots and let everything in flight reach a final state.
        end = timezone.now()
        Schedule.objects.filter(organization=org, state=ScheduleState.ACTIVE).update(
            state=ScheduleState.PAUSED, state_note="paused by the chaos test"
        )
        fleet.ensure_running()
        log(f"chaos: {figures.kills} kills done; waiting up to {config.settle:.0f} s for quiescence")
        settle_started = time.monotonic()
        settle_until = settle_started + config.settle
        busy = [RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.RETRYING]
        while time.monotonic() < settle_until:
            open_runs = Run.objects.filter(organization=org, status__in=busy).count()
            unrelayed = OutboxEvent.objects.filter(organization_id=org.pk, relayed_at__isnull=True).count()
            # A run cancelled while running is final at once; its attempt closes at the executor's next heartbeat.
            open_attempts = RunAttempt.objects.filter(
                run__organization_id=org.pk, outcome=AttemptOutcome.RUNNING
            ).count()
            if open_runs == 0 and unrelayed == 0 and open_attempts == 0:
                figures.settled_seconds = round(time.monotonic() - settle_started, 1)
                break
            time.sleep(1)
        _verify(org.pk, start, end, figures, redis.Redis.from_url(private_redis.url))
    finally:
        fleet.stop_all()
        proxy.cut()
        private_redis.stop()
        if not config.keep:
            # Leftover queued runs of a finished test would be re-sent by any later dispatcher on this database.
            OutboxEvent.objects.filter(organization_id=org.pk).delete()
            org.delete()
    return figures


def _verify(org_id: int, start: datetime, end: datetime, figures: Figures, client: redis.Redis) -> None:
    runs = Run.objects.filter(organization_id=org_id)
    figures.runs = runs.count()
    figures.duplicates = (
        runs.exclude(slot=None).values("schedule_id", "slot").annotate(n=Count("id")).filter(n__gt=1).count()
    )
    # Every slot up to shortly before the pause must have a run, or be counted as missed by the misfire policy.
    horizon = end - timedelta(seconds=3)
    slots_by_schedule: dict[int, set[datetime]] = {}
    for schedule_id, slot in runs.exclude(slot=None).values_list("schedule_id", "slot"):
        if slot is not None and schedule_id is not None:
            slots_by_schedule.setdefault(schedule_id, set()).add(slot)
    for schedule in Schedule.objects.filter(organization_id=org_id):
        # Slots the dispatcher has passed (before next_run_at) are accounted for; a dispatcher that fell far
        # behind the pause is a failure of its own ("schedules lagging").
        processed_until = min(horizon, schedule.next_run_at or horizon)
        if schedule.next_run_at is not None and schedule.next_run_at < end - timedelta(seconds=30):
            figures.dispatch_lagging += 1
        expected_slots = []
        # The first slot of a new schedule is the first one after its creation (services.first_slot).
        for slot in schedule.trigger.iter_after(schedule.created_at - timedelta(microseconds=1)):
            if slot >= processed_until:
                break
            expected_slots.append(slot)
        if schedule.max_runs is not None:
            expected_slots = expected_slots[: schedule.max_runs]
        figures.slots_expected += len(expected_slots)
        missing = [s for s in expected_slots if s not in slots_by_schedule.get(schedule.pk, set())]
        unexplained = max(len(missing) - schedule.missed_count, 0)
        figures.explained_missed += len(missing) - unexplained
        figures.missing += unexplained
        if unexplained:
            figures.notes.append(f"schedule {schedule.pk} ({schedule.misfire_policy}): {unexplained} slot(s) missing")
    legit_open = [RunStatus.WAITING]
    figures.stuck = runs.exclude(status__in=[*FINAL_STATUSES, *legit_open]).count()
    attempt_counts = dict(
        RunAttempt.objects.filter(run__organization_id=org_id).values_list("run_id").annotate(n=Count("id"))
    )
    for run_id, attempts in runs.values_list("id", "attempts"):
        if attempt_counts.get(run_id, 0) != attempts:
            figures.attempts_unaccounted += 1
    figures.attempts_unaccounted += RunAttempt.objects.filter(
        run__organization_id=org_id, outcome=AttemptOutcome.RUNNING, run__status__in=FINAL_STATUSES
    ).count()
    # Events: every outbox event of this org is in the stream exactly once, and each final run's last event
    # says how it ended.
    outbox_ids = {str(e) for e in OutboxEvent.objects.filter(organization_id=org_id).values_list("event_id", flat=True)}
    seen: Counter[str] = Counter()
    last_event: dict[int, str] = {}
    for _, fields in client.xrange(settings.EVENTS_STREAM):
        envelope = json.loads(fields[b"envelope"])
        if envelope["org"] != org_id:
            continue
        seen[envelope["id"]] += 1
        if envelope["run"] is not None:
            last_event[envelope["run"]] = envelope["type"]
    figures.events_missing = len(outbox_ids - set(seen))
    queues = {q: client.llen(q) for q in settings.WORKER_QUEUES.split(",")}
    figures.notes.append(f"broker queues at the end: {queues}, unacked: {client.hlen('unacked')}")
    figures.events_duplicated = sum(1 for n in seen.values() if n > 1)
    for run_id, status in runs.filter(status__in=list(FINAL_EVENT)).values_list("id", "status"):
        if last_event.get(run_id) != FINAL_EVENT[RunStatus(status)]:
            figures.final_events_wrong += 1
