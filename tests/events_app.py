"""A bare Celery app with EchoFlow's worker consumer and transport, run by tests/test_worker_consumer.py in a real
prefork worker. The broker is the test Redis, given by the test in ``EVENTS_TEST_BROKER``."""

from __future__ import annotations

import os
import time

from celery import Celery

QUEUE = "echoflow.test-events"

app = Celery("events_test", broker=os.environ.get("EVENTS_TEST_BROKER", "redis://127.0.0.1:6379/15"))
app.conf.update(
    broker_transport="echoflow.broker:RedisTransport",
    worker_consumer="echoflow.worker_consumer:Consumer",
    worker_send_task_events=True,
    task_default_queue=QUEUE,
    task_ignore_result=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
)


@app.task(name="events_test.nap")
def nap(seconds: float) -> None:
    time.sleep(seconds)
