"""A pipelined ``send_runs``: Celery's own messages, written to Redis in one round trip per batch.

The first experiment on the cost of sending (docs/benchmarks.md): Celery builds every message as usual
(``apply_async``: same task, headers, queue, sent events) but what kombu's Redis channel would push is collected
and pushed through one pipeline. It did not help, since the cost was Celery's per-message work, not round trips;
``runs.sending`` (the plain sender) now builds each batch's message once and is about ten times faster. Kept for
``bench dispatch --sender pipelined``.
"""

from __future__ import annotations

from typing import Any

from kombu.utils.json import dumps


def send_runs_pipelined(rows: list[tuple[int, int]]) -> None:
    from echoflow.celery import app
    from runs.sending import queue_for_priority
    from runs.tasks import execute_run

    with app.producer_or_acquire() as producer:
        channel: Any = producer.channel
        collected: list[tuple[str, dict[str, Any]]] = []

        def collect(queue: str, message: dict[str, Any], **kwargs: Any) -> None:
            collected.append((queue, message))

        channel._put = collect  # shadows the class method on this channel only
        try:
            for pk, priority in rows:
                execute_run.apply_async(args=(pk,), queue=queue_for_priority(priority), producer=producer)
        finally:
            del channel._put
        with channel.conn_or_acquire() as client:
            pipe = client.pipeline(transaction=False)
            for queue, message in collected:
                pipe.lpush(
                    channel._q_for_pri(queue, channel._get_message_priority(message, reverse=False)), dumps(message)
                )
            pipe.execute()
