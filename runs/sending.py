"""Sending run messages to the broker, a batch at a time.

Each run goes out in an ``execute_run`` message of its own, except in a burst: many runs for one queue at once
(a slot that thousands of schedules share) go out as ``execute_runs`` messages of several runs each
(``runs_messages``; settings ``ECHOFLOW_RUN_BATCH_MAX`` and ``ECHOFLOW_RUN_BATCH_SPREAD``). A Celery message costs
its worker about 2 ms of CPU (the consumer's reservation, acknowledgement and task events, the hand-over to the
pool process, the tracer), as much as executing a no-op run; a batch pays it once for all its runs. The runs of
a batch are executed one after the other, each with its own claim, attempt and finish
(runs.executor.run_execute_batch), and given back to the queue when the batch runs long, so nothing about a run's
guarantees depends on which message carried it.

``Task.apply_async`` costs about a millisecond of CPU per message (options merging, routing, publish signals, a
task-sent event, one broker round trip), which made sending 10,000 due runs take longer than writing them.

On Redis, a batch is published as the messages ``apply_async`` would publish — Celery's task protocol 2 from
``app.amqp.as_task_v2``, kombu's Redis envelope (base64 body, delivery info, a delivery tag), to the same queue
through the same exchange, on the list kombu's priority handling picks for it — but the message is built once
per batch, queue and task: each message only fills in its run id (or ids), task id and delivery tag. All of a
batch's messages go out in one pipeline, one LPUSH per queue, in the order given (kombu consumes a list from its
other end); runs given back by a batch go out with RPUSH, to be consumed next.

Everywhere else the plain ``apply_async`` loop is kept: eager mode (no broker), other transports (the embedded
filesystem broker of ``manage.py up``), and processes where something listens to Celery's publish signals
(tracing libraries hook ``before_task_publish``), so that they keep seeing every message.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from celery import signals
from django.conf import settings
from kombu.entity import maybe_delivery_mode
from kombu.transport.redis import Channel as RedisChannel
from kombu.utils.json import dumps

EXECUTE_RUN = "echoflow.execute_run"
EXECUTE_RUNS = "echoflow.execute_runs"
# At most this many values per LPUSH or RPUSH (a batch is usually ECHOFLOW_DISPATCH_BATCH_SIZE runs, at most 50,000).
_LPUSH_CHUNK = 1000

# The messages of one send: per queue, the run ids of each message in order (one id: ``execute_run``; more:
# ``execute_runs``).
Messages = dict[str, list[list[int]]]


def queue_for_priority(priority: int) -> str:
    """0-3 → echoflow.low, 4-6 → echoflow, 7-9 → echoflow.high (see RUN_QUEUES in settings)."""
    queues = settings.RUN_QUEUES
    if priority >= 7:
        return str(queues["high"])
    if priority <= 3:
        return str(queues["low"])
    return str(queues["default"])


def batch_split(pks: list[int], *, most: int, spread: int) -> list[list[int]]:
    """One queue's runs cut into messages, in order: as many runs per message as still leaves at least ``spread``
    messages (so that many worker processes share the burst), at most ``most``. Fewer than twice ``spread`` runs
    go one per message."""
    size = max(1, min(most, len(pks) // max(spread, 1)))
    return [pks[i : i + size] for i in range(0, len(pks), size)]


# Set while sending a part of a burst whose rest is sent right after it (runs.dispatcher: a full batch of due
# schedules): the part goes out in messages as full as RUN_BATCH_MAX allows, since RUN_BATCH_SPREAD is about how many
# worker processes share the whole burst. Spread over a small part, it made messages of a few runs each, and a
# Celery message costs its worker as much as a no-op run.
_more_follows: ContextVar[bool] = ContextVar("echoflow_runs_more_follows", default=False)


@contextmanager
def more_follows() -> Iterator[None]:
    """Runs sent inside this block are part of a burst whose rest follows at once (see ``_more_follows``)."""
    token = _more_follows.set(True)
    try:
        yield
    finally:
        _more_follows.reset(token)


def runs_messages(rows: list[tuple[int, int]]) -> Messages:
    """(run id, priority) rows → the messages that carry them, per priority queue (settings.ECHOFLOW RUN_BATCH_*;
    inside ``more_follows``, without the spread)."""
    conf = settings.ECHOFLOW
    spread = 1 if _more_follows.get() else conf["RUN_BATCH_SPREAD"]
    by_queue: dict[str, list[int]] = defaultdict(list)
    for pk, priority in rows:
        by_queue[queue_for_priority(priority)].append(pk)
    return {queue: batch_split(pks, most=conf["RUN_BATCH_MAX"], spread=spread) for queue, pks in by_queue.items()}


def send_runs(rows: list[tuple[int, int]], *, front: bool = False) -> None:
    """Publish the runs (run id, priority) to their priority queues over one connection: one ``execute_run``
    message per run, or for a burst ``execute_runs`` messages of several (``runs_messages``).

    ``front``: put the messages at the head of their queues, to be taken before anything already waiting (the
    runs a batch gives back, runs.executor.run_execute_batch); only the direct Redis publish can, elsewhere they
    join the tail."""
    from echoflow.celery import app

    messages = runs_messages(rows)
    with app.producer_or_acquire() as producer:
        if direct_publish_supported(app, producer, queues=set(messages)):
            publish_runs(app, producer, messages, front=front)
        else:
            apply_async_runs(producer, messages)


def runs_give_back(run_ids: list[int]) -> None:
    """Send again, to the head of their queues, the runs of a batch that it has not started and that are still
    queued (runs.executor.run_execute_batch); the others were cancelled or taken meanwhile."""
    from runs.models import Run, RunStatus

    order = {pk: i for i, pk in enumerate(run_ids)}
    rows = sorted(
        Run.objects.filter(pk__in=run_ids, status=RunStatus.QUEUED).values_list("pk", "priority"),
        key=lambda row: order[row[0]],
    )
    if rows:
        send_runs(rows, front=True)


def direct_publish_supported(app: Any, producer: Any, *, queues: set[str]) -> bool:
    conf = app.conf
    if conf.task_always_eager or not isinstance(producer.channel, RedisChannel):
        return False
    if conf.task_serializer != "json" or conf.task_compression:
        return False  # the message template is written for plain JSON
    # Celery sends to a direct queue through the default exchange, straight onto the queue's list; a queue
    # configured with another exchange type is routed by kombu's bindings, left to apply_async.
    if any(app.amqp.queues[name].exchange.type != "direct" for name in queues):
        return False
    return not (signals.before_task_publish.receivers or signals.after_task_publish.receivers)


def apply_async_runs(producer: Any, messages: Messages) -> None:
    from runs.tasks import execute_run, execute_runs

    for queue, groups in messages.items():
        for pks in groups:
            if len(pks) == 1:
                execute_run.apply_async(args=(pks[0],), queue=queue, producer=producer)
            else:
                execute_runs.apply_async(args=(pks,), queue=queue, producer=producer)


def publish_runs(app: Any, producer: Any, messages: Messages, *, front: bool = False) -> None:
    """What ``apply_async`` would publish for each message, in one Redis pipeline (the producer's channel is
    Redis). ``front``: RPUSH, so that they are consumed next (kombu pops from the right), in their order."""
    channel: RedisChannel = producer.channel
    count = sum(len(groups) for groups in messages.values())
    task_ids, delivery_tags = _uuid4s(count), _uuid4s(count)
    with channel.conn_or_acquire() as client:
        pipe = client.pipeline(transaction=False)
        push = pipe.rpush if front else pipe.lpush
        sent = 0
        templates: dict[tuple[str, str], _MessageTemplate] = {}
        for queue_name, groups in messages.items():
            payloads: dict[str, list[str]] = defaultdict(list)  # per Redis list (the queue's priority list)
            for pks in groups:
                task = EXECUTE_RUN if len(pks) == 1 else EXECUTE_RUNS
                template = templates.get((queue_name, task))
                if template is None:
                    template = templates[queue_name, task] = _MessageTemplate(app, producer, queue_name, task)
                args = str(pks[0]) if len(pks) == 1 else "[" + ", ".join(str(pk) for pk in pks) + "]"
                payloads[template.redis_key].append(template.render(args, task_ids[sent], delivery_tags[sent]))
                sent += 1
            for key, values in payloads.items():
                if front:
                    values.reverse()
                for start in range(0, len(values), _LPUSH_CHUNK):
                    push(key, *values[start : start + _LPUSH_CHUNK])
        pipe.execute()


def _uuid4s(count: int) -> list[str]:
    """``count`` random (version 4) UUIDs as Celery and kombu write them (``str(uuid.uuid4())``), from one read of
    the random source: the version nibble is 4, the variant bits 10."""
    digits = os.urandom(16 * count).hex()
    return [
        f"{d[:8]}-{d[8:12]}-4{d[13:16]}-{_VARIANT[d[16]]}{d[17:20]}-{d[20:32]}"
        for d in (digits[i : i + 32] for i in range(0, 32 * count, 32))
    ]


_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


# Placeholders in a message template: plain ASCII words that JSON encoding leaves as they are.
_RUN_ID, _TASK_ID, _DELIVERY_TAG, _BODY = "@@run-id@@", "@@task-id@@", "@@delivery-tag@@", "@@body@@"
_PLACEHOLDER = re.compile("(" + "|".join(re.escape(p) for p in (_RUN_ID, _TASK_ID, _DELIVERY_TAG, _BODY)) + ")")


class _MessageTemplate:
    """The Redis payload of an ``execute_run`` message to one queue, with the per-run parts left open.

    Built the way the two libraries build it: the task message by Celery's ``as_task_v2`` (with the options
    ``Task.apply_async`` passes for this task), the envelope as kombu's ``Producer.publish`` and the Redis
    channel's ``basic_publish`` make it; serialized by kombu's JSON serializer.
    """

    def __init__(self, app: Any, producer: Any, queue_name: str, task: str = EXECUTE_RUN) -> None:
        channel = producer.channel
        conf = app.conf
        queue = app.amqp.queues[queue_name]  # created (direct exchange named after it) when missing, as Celery does
        producer.maybe_declare(queue)
        # As Task.apply_async inside a task (the system dispatch task): the runs are that task's children.
        parent = app.current_worker_task
        headers, properties, _, _ = app.amqp.as_task_v2(
            _TASK_ID,
            task,
            args=(0,),
            root_id=(parent.request.root_id or parent.request.id) if parent else None,
            parent_id=parent.request.id if parent else None,
            reply_to=app.thread_oid,
            ignore_result=True,
            argsrepr=f"({_RUN_ID},)",
            kwargsrepr="{}",
        )
        # The task body [args, kwargs, embed], with the argument spliced in as bare JSON: the run id (a number) or
        # the run ids (a list of numbers).
        _, _, body, _ = app.amqp.as_task_v2(_TASK_ID, task, args=(0,))
        body_json = dumps([[_RUN_ID], *body[1:]])
        self._body_parts = body_json.split(f'"{_RUN_ID}"')
        message = channel.prepare_message(
            _BODY,
            0,  # kombu's default message priority, as apply_async without a priority sends
            "application/json",
            "utf-8",
            headers,
            {
                **properties,
                "delivery_mode": maybe_delivery_mode(queue.exchange.delivery_mode or conf.task_default_delivery_mode),
            },
        )
        _, body_encoding = channel.encode_body(b"", channel.body_encoding)
        message["properties"].update(
            body_encoding=body_encoding,
            delivery_tag=_DELIVERY_TAG,
            # As Celery publishes to a direct queue: the default (anonymous) exchange, routing key = queue name.
            delivery_info={"exchange": "", "routing_key": queue_name},
        )
        self._channel = channel
        self.redis_key: str = channel._q_for_pri(queue_name, channel._get_message_priority(message, reverse=False))
        self._parts = _PLACEHOLDER.split(dumps(message))

    def render(self, args: str, task_id: str, delivery_tag: str) -> str:
        """``args``: the task's one argument as JSON and as Python's repr alike (``41`` or ``[41, 42]``)."""
        encoded, _ = self._channel.encode_body(args.join(self._body_parts).encode(), self._channel.body_encoding)
        body = encoded.decode() if isinstance(encoded, bytes) else str(encoded)
        values = {_RUN_ID: args, _TASK_ID: task_id, _DELIVERY_TAG: delivery_tag, _BODY: body}
        return "".join([values.get(part, part) for part in self._parts])
