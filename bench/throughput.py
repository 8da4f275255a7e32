"""Scenario 4 — throughput: N ad-hoc ``echoflow.noop`` runs through the whole path versus N bare Celery no-ops.

EchoFlow: N ad-hoc runs written as ``run_create_adhoc`` writes them (queued, with their ``run.queued`` events, in
bulk), sent by ``dispatch_tick`` (the real sender), then one worker (``celery -A echoflow worker``) with the pool
and concurrency under test claims, executes, records the attempt and finishes each run with its events.
Rate = N / (last finished_at - first started_at), from the database.

Peer: N ``bench.peer.noop`` messages (bench.celery_peer) in the same Redis, one worker with the same pool and
concurrency. Rate = N / (last finish - first start), which the tasks note in Redis. The peer runs twice: on stock
kombu and Celery, as a user of bare Celery would, and with EchoFlow's fixes to them (``echoflow.broker``'s Redis
transport and ``echoflow.worker_consumer``'s batched task events), which bare Celery would gain from as well.
Both queues are filled before the worker starts, so worker start-up is outside both measurements.
"""

from __future__ import annotations

import time
from pathlib import Path

import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from bench.common import Children, print_table, ratio
from bench.data import bench_org, truncate

WORKER_FLAGS = ["-l", "WARNING", "--without-gossip", "--without-mingle"]


def _echoflow_rate(*, count: int, pool: str, concurrency: int, limit: float, log: Path) -> tuple[float, int]:
    from echoflow.events.bus import EventSpec, events_record
    from runs.dispatcher import dispatch_tick
    from runs.models import Run, RunStatus, RunTrigger
    from runs.run_writes import runs_insert
    from schedules.models import DEFAULT_BACKOFF

    truncate(["runs_runattempt", "runs_run", "events_outboxevent"])
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.flushdb()
    org = bench_org()
    now = timezone.now()
    runs = [
        Run(organization_id=org.pk, schedule=None, idempotency_key=f"bench:{pool}:{i}", trigger=RunTrigger.API,
            due_at=now, status=RunStatus.QUEUED, max_attempts=1, backoff_seconds=list(DEFAULT_BACKOFF),
            timeout_seconds=60, priority=5, action_kind="python", action_name="echoflow.noop", action_config={},
            payload={}, created_at=now, trace_id=Run.new_trace_id())
        for i in range(count)
    ]  # fmt: skip
    inserted = runs_insert(runs)
    events_record(
        EventSpec(type="run.queued", organization_id=org.pk, schedule_id=None, run_id=r.pk, attempt=0,
                  data={"status": RunStatus.QUEUED, "trigger": r.trigger})
        for r in inserted
    )  # fmt: skip
    dispatch_tick(max_batches=count // settings.ECHOFLOW["DISPATCH_BATCH_SIZE"] + 2)
    children = Children()
    proc = children.start(
        ["-m", "celery", "-A", "echoflow", "worker", "-P", pool, "-c", str(concurrency), "-Q", "echoflow",
         "-n", f"bench-echoflow-{pool}@%h", *WORKER_FLAGS],
        log=log,
    )  # fmt: skip
    deadline = time.time() + limit
    done = 0
    try:
        while time.time() < deadline and proc.poll() is None:
            done = Run.objects.filter(status=RunStatus.SUCCEEDED).count()
            if done >= count:
                break
            time.sleep(0.5)
    finally:
        children.stop_all()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), extract(epoch FROM max(finished_at) - min(started_at)) FROM runs_run "
            "WHERE status = 'succeeded'"
        )
        done, span = cursor.fetchone()
    return (done / float(span) if done and span else float("nan")), int(done)


def _celery_rate(
    *, count: int, pool: str, concurrency: int, limit: float, log: Path, fixes: bool = False
) -> tuple[float, int]:
    from bench import celery_peer

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.flushdb()
    with celery_peer.app.producer_or_acquire() as producer:
        for i in range(count):
            celery_peer.noop.apply_async(args=(i,), producer=producer)
    env = celery_peer.worker_env(fixes=fixes)
    children = Children()
    proc = children.start(
        ["-m", "celery", "-A", "bench.celery_peer", "worker", "-P", pool, "-c", str(concurrency), "-Q",
         celery_peer.QUEUE, "-n", f"bench-peer-{pool}@%h", *WORKER_FLAGS],
        log=log, env=env,
    )  # fmt: skip
    deadline = time.time() + limit
    try:
        while time.time() < deadline and proc.poll() is None:
            if int(client.get(f"{celery_peer.KEY}:done") or 0) >= count:
                break
            time.sleep(0.2)
    finally:
        children.stop_all()
    done = int(client.get(f"{celery_peer.KEY}:done") or 0)
    first, last = client.get(f"{celery_peer.KEY}:first"), client.get(f"{celery_peer.KEY}:last")
    if not done or first is None or last is None or float(last) <= float(first):
        return float("nan"), done
    return done / (float(last) - float(first)), done


def run(*, count: int, concurrency: int, pools: list[str], limit: float, workdir: Path) -> None:
    log = workdir / "throughput.log"
    rows = []
    for pool in pools:
        ours, ours_done = _echoflow_rate(count=count, pool=pool, concurrency=concurrency, limit=limit, log=log)
        theirs, theirs_done = _celery_rate(count=count, pool=pool, concurrency=concurrency, limit=limit, log=log)
        # The peer again with EchoFlow's fixes to kombu and Celery, which bare Celery would gain from too.
        same, same_done = _celery_rate(
            count=count, pool=pool, concurrency=concurrency, limit=limit, log=log, fixes=True
        )
        rows.append([
            f"{pool} c={concurrency}", count, ours_done, ours, theirs_done, theirs, ratio(ours, theirs), same_done,
            same, ratio(ours, same),
        ])  # fmt: skip
    print_table(
        f"throughput: {count:,} no-op runs vs bare Celery tasks",
        ["pool", "N", "EchoFlow done", "EchoFlow runs/s", "Celery done", "Celery tasks/s", "ratio",
         "Celery with EchoFlow's fixes done", "Celery with EchoFlow's fixes, tasks/s", "ratio to it"],
        rows,
    )  # fmt: skip
