"""Sending ``execute_run`` messages to the broker, many at a time.

``Task.apply_async`` costs about a millisecond of CPU per message (options merging, routing, signals, a task-sent
event, one broker round trip), which made sending 10,000 due runs take longer than writing them. Here the
messages are the ones ``apply_async`` would publish — Celery's task protocol 2 built by ``app.amqp.as_task_v2``,
to the same queue and exchange, with the same serializer and delivery mode — but published with kombu's producer
directly, routing and declaring once per batch, inside ``Producer.batch()``: on Redis every LPUSH of the batch
goes out in one pipeline (kombu applies the transport's priority handling to each message as usual).

Where that does not apply, the plain ``apply_async`` loop is kept: eager mode (no broker at all), a transport
without batch publishing (the embedded filesystem broker of ``manage.py up``), and when something listens to
Celery's publish signals (tracing libraries hook ``before_task_publish``), so they keep seeing every message.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from celery import signals
from celery.utils import uuid
from django.conf import settings

EXECUTE_RUN = "echoflow.execute_run"


def queue_for_priority(priority: int) -> str:
    """0-3 → echoflow.low, 4-6 → echoflow, 7-9 → echoflow.high (see RUN_QUEUES in settings)."""
    queues = settings.RUN_QUEUES
    if priority >= 7:
        return str(queues["high"])
    if priority <= 3:
        return str(queues["low"])
    return str(queues["default"])


def send_runs(rows: list[tuple[int, int]]) -> None:
    """Publish one ``execute_run`` message per (run id, priority), to its priority's queue, over one connection."""
    from echoflow.celery import app

    with app.producer_or_acquire() as producer:
        if direct_publish_supported(app, producer):
            publish_runs(app, producer, rows)
        else:
            apply_async_runs(producer, rows)


def direct_publish_supported(app: Any, producer: Any) -> bool:
    if app.conf.task_always_eager or not producer.supports_batch_publish:
        return False
    return not (signals.before_task_publish.receivers or signals.after_task_publish.receivers)


def apply_async_runs(producer: Any, rows: list[tuple[int, int]]) -> None:
    from runs.tasks import execute_run

    for pk, priority in rows:
        execute_run.apply_async(args=(pk,), queue=queue_for_priority(priority), producer=producer)


def publish_runs(app: Any, producer: Any, rows: list[tuple[int, int]]) -> None:
    """What ``apply_async`` publishes, for each row, with the per-message work cut to building the message."""
    conf = app.conf
    # Read once: each setting lookup goes through Celery's and Django's settings layers (microseconds that add up).
    serializer, compression, default_delivery_mode = (
        conf.task_serializer,
        conf.task_compression,
        conf.task_default_delivery_mode,
    )
    by_queue: dict[str, list[int]] = defaultdict(list)
    for pk, priority in rows:
        by_queue[queue_for_priority(priority)].append(pk)
    # As Task.apply_async inside a task (the system dispatch task): the runs are that task's children.
    parent = app.current_worker_task
    root_id = (parent.request.root_id or parent.request.id) if parent else None
    parent_id = parent.request.id if parent else None
    reply_to = app.thread_oid
    as_task = app.amqp.as_task_v2
    with producer.batch(max_size=max(1, len(rows))):
        for queue_name, pks in by_queue.items():
            queue = app.amqp.queues[queue_name]  # created (direct exchange named after it) when missing, as Celery does
            producer.maybe_declare(queue)
            # Celery publishes to a direct queue through the default (anonymous) exchange, routing key = queue name.
            if queue.exchange.type == "direct":
                exchange, routing_key = "", queue_name
            else:
                exchange, routing_key = queue.exchange.name, queue.routing_key
            delivery_mode = queue.exchange.delivery_mode or default_delivery_mode
            for pk in pks:
                task_id = uuid()
                headers, properties, body, _ = as_task(
                    task_id,
                    EXECUTE_RUN,
                    args=(pk,),
                    root_id=root_id,
                    parent_id=parent_id,
                    reply_to=reply_to,
                    ignore_result=True,
                    argsrepr=f"({pk},)",
                    kwargsrepr="{}",
                )
                producer.publish(
                    body,
                    exchange=exchange,
                    routing_key=routing_key,
                    serializer=serializer,
                    compression=compression,
                    delivery_mode=delivery_mode,
                    headers=headers,
                    retry=False,
                    **properties,
                )
