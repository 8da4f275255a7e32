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
# Set (to anything) to give the peer EchoFlow's fixes to Celery and kombu: its Redis transport (echoflow.broker) and
# its worker consumer (echoflow.worker_consumer). The throughput scenario also runs the peer that way, to show what
# of the ratio those fixes account for; bare Celery would gain from them as well.
FIXES_ENV = "BENCH_PEER_ECHOFLOW_FIXES"
ECHOFLOW_FIXES = {
    "broker_transport": "echoflow.broker:RedisTransport",
    "worker_consumer": "echoflow.worker_consumer:Consumer",
}
QUEUE = "bench.peer"


def worker_env(*, fixes: bool) -> dict[str, str]:
    """The environment of a peer worker, with or without EchoFlow's fixes."""
    env = {k: v for k, v in os.environ.items() if k != FIXES_ENV}
    if fixes:
        env[FIXES_ENV] = "1"
    return env


KEY = "bench:peer"


def peer_app(name: str, queue: str, **extra: object) -> Celery:
    """A bare Celery app on the bench broker with the worker-side settings of EchoFlow's app (the peers of the
    throughput and lag scenarios share it)."""
    peer = Celery(name, broker=BROKER)
    if os.environ.get(FIXES_ENV):
        peer.conf.update(ECHOFLOW_FIXES)
    peer.conf.update(
        task_default_queue=queue,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_send_sent_event=True,
        worker_send_task_events=True,
        broker_transport_options={"visibility_timeout": 3600, "queue_order_strategy": "priority"},
        broker_connection_retry_on_startup=True,
        **extra,
    )
    return peer


_client: redis.Redis | None = None


def peer_redis() -> redis.Redis:
    """One client per process, to the bench broker."""
    global _client
    if _client is None:
        _client = redis.Redis.from_url(BROKER)
    return _client


app = peer_app("bench_peer", QUEUE)


@app.task(name="bench.peer.noop")
def noop(index: int) -> None:
    started = time.time()
    pipe = peer_redis().pipeline(transaction=False)
    pipe.set(f"{KEY}:first", started, nx=True)
    pipe.set(f"{KEY}:last", time.time())
    pipe.incr(f"{KEY}:done")
    pipe.execute()
