"""A pipelined ``send_runs``: Celery's own messages, written to Redis in one round trip per batch.

The first experiment on the cost of sending (docs/benchmarks.md): Celery builds every message as usual
(``apply_async``: same task, headers, queue, sent events) but what kombu's Redis channel would push is collected
and pushed through one pipeline. It did not help, since the cost was Celery's per-message work, not round trips;
``runs.sending`` (the plain sender) now builds each batch's message once and is about ten times faster. Kept for
``bench dispatch --sender pipelined``; ``collect_messages`` and ``push_messages`` also serve the lag scenario's
"Celery alone" rows, which push a slot's ready-made messages at the slot.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
from celery import Celery
from kombu.utils.json import dumps

Messages = list[tuple[str, str]]  # (Redis list key, message body), as kombu's Redis channel would push them


def collect_messages(app: Celery, send: Callable[[Any], None]) -> Messages:
    """What ``send(producer)`` publishes through ``app``, built by Celery as usual (headers, queue, delivery tag,
    sent events) but collected instead of pushed."""
    collected: Messages = []
    with app.producer_or_acquire() as producer:
        channel: Any = producer.channel

        def collect(queue: str, message: dict[str, Any], **kwargs: Any) -> None:
            key = channel._q_for_pri(queue, channel._get_message_priority(message, reverse=False))
            collected.append((key, dumps(message)))

        channel._put = collect  # shadows the class method on this channel only
        try:
            send(producer)
        finally:
            del channel._put
    return collected


def push_messages(client: redis.Redis, messages: Messages) -> None:
    """Push collected messages in one pipelined round trip."""
    pipe = client.pipeline(transaction=False)
    for key, body in messages:
        pipe.lpush(key, body)
    pipe.execute()


def send_runs_pipelined(rows: list[tuple[int, int]]) -> None:
    from echoflow.celery import app
    from runs.sending import queue_for_priority
    from runs.tasks import execute_run

    def send(producer: Any) -> None:
        for pk, priority in rows:
            execute_run.apply_async(args=(pk,), queue=queue_for_priority(priority), producer=producer)

    messages = collect_messages(app, send)
    with app.producer_or_acquire() as producer, producer.channel.conn_or_acquire() as client:
        push_messages(client, messages)
