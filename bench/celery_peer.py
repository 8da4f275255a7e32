"""The bare-Celery peer of the throughput scenario: a no-op task in an app of its own, on the same broker.

It carries the worker-side settings of EchoFlow's app (late acks, prefetch 1, task events, no results), so the
ratio measures EchoFlow's own work per run (claim, attempt row, action thread, finish, events), not Celery's.
Each task notes its start and finish in Redis in one pipelined round trip.
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

BROKER = os.environ.get("CELERY_BROKER_URL") or os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/7"
QUEUE = "bench.peer"
KEY = "bench:peer"

app = Celery("bench_peer", broker=BROKER)
app.conf.update(
    task_default_queue=QUEUE,
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_send_sent_event=True,
    worker_send_task_events=True,
    broker_transport_options={"visibility_timeout": 3600, "queue_order_strategy": "priority"},
    broker_connection_retry_on_startup=True,
)

_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(BROKER)
    return _client


@app.task(name="bench.peer.noop")
def noop(index: int) -> None:
    started = time.time()
    pipe = _redis().pipeline(transaction=False)
    pipe.set(f"{KEY}:first", started, nx=True)
    pipe.set(f"{KEY}:last", time.time())
    pipe.incr(f"{KEY}:done")
    pipe.execute()
