"""Sending run messages (runs/sending.py): the direct batch publish puts on Redis what ``apply_async`` would."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from celery import signals
from django.conf import settings
from django.utils import timezone
from kombu import Connection, Exchange, Queue

from echoflow.accounts.models import Organization
from echoflow.celery import app
from runs import sending
from runs.dispatcher import dispatch_tick
from runs.models import Run, RunStatus
from runs.services import schedule_run_now
from schedules.services import schedule_create
from tests.conftest import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

RUN_QUEUES = ("echoflow.high", "echoflow", "echoflow.low")


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.flushdb()
    yield client
    client.flushdb()


def _messages(client: redis.Redis, queue: str) -> list[dict[str, Any]]:
    """The queue's messages, oldest (next to be consumed: kombu pops from the right) first."""
    return [json.loads(raw) for raw in reversed(client.lrange(queue, 0, -1))]


def _body(message: dict[str, Any]) -> Any:
    assert message["properties"]["body_encoding"] == "base64"
    return json.loads(base64.b64decode(message["body"]))


def test_the_redis_broker_takes_the_direct_batch_publish() -> None:
    with app.producer_or_acquire() as producer:
        assert sending.direct_publish_supported(app, producer, queues=set(RUN_QUEUES))


def test_a_direct_message_is_the_message_apply_async_sends_but_for_its_ids(broker: redis.Redis) -> None:
    events = broker.pubsub()
    events.psubscribe("*celeryev*")  # task events go out on the celeryev fanout exchange (Redis PUBLISH)
    subscribed = events.get_message(timeout=5)
    assert subscribed is not None and subscribed["type"] == "psubscribe"
    with app.producer_or_acquire() as producer:
        sending.apply_async_runs(producer, {"echoflow": [[41]]})
        sending.publish_runs(app, producer, {"echoflow": [[41]]})
    plain, direct = _messages(broker, "echoflow")
    assert (
        _body(direct) == _body(plain) == [[41], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    )
    ids = {"id", "root_id", "correlation_id", "delivery_tag"}
    assert direct["headers"]["id"] == direct["headers"]["root_id"] == direct["properties"]["correlation_id"]
    assert direct["headers"]["id"] != plain["headers"]["id"]
    assert uuid.UUID(direct["headers"]["id"]).version == uuid.UUID(direct["properties"]["delivery_tag"]).version == 4
    assert {k: v for k, v in direct["headers"].items() if k not in ids} == {
        k: v for k, v in plain["headers"].items() if k not in ids
    }
    assert direct["headers"]["task"] == "echoflow.execute_run"
    assert direct["headers"]["argsrepr"] == "(41,)"
    assert direct["headers"]["ignore_result"] is True
    strip = {"correlation_id", "delivery_tag"}
    assert {k: v for k, v in direct["properties"].items() if k not in strip} == {
        k: v for k, v in plain["properties"].items() if k not in strip
    }
    assert direct["properties"]["delivery_info"] == {"exchange": "", "routing_key": "echoflow"}
    assert (direct["content-type"], direct["content-encoding"]) == (plain["content-type"], plain["content-encoding"])
    # CELERY_TASK_SEND_SENT_EVENT is off: neither path publishes a task-sent event per run.
    assert events.get_message(timeout=0.5) is None
    events.close()


def test_a_direct_batch_message_is_the_execute_runs_message_apply_async_sends(broker: redis.Redis) -> None:
    with app.producer_or_acquire() as producer:
        sending.apply_async_runs(producer, {"echoflow.low": [[41, 42, 1234567]]})
        sending.publish_runs(app, producer, {"echoflow.low": [[41, 42, 1234567]]})
    plain, direct = _messages(broker, "echoflow.low")
    assert _body(direct) == _body(plain)
    assert _body(direct)[0] == [[41, 42, 1234567]]
    ids = {"id", "root_id", "correlation_id", "delivery_tag"}
    assert {k: v for k, v in direct["headers"].items() if k not in ids} == {
        k: v for k, v in plain["headers"].items() if k not in ids
    }
    assert direct["headers"]["task"] == "echoflow.execute_runs"
    assert direct["headers"]["argsrepr"] == "([41, 42, 1234567],)"
    assert direct["properties"]["delivery_info"] == {"exchange": "", "routing_key": "echoflow.low"}


@pytest.mark.parametrize(
    ("count", "most", "spread", "sizes"),
    [
        (0, 16, 64, []),
        (5, 16, 64, [1] * 5),
        (127, 16, 64, [1] * 127),  # under twice the spread: one run per message
        (128, 16, 64, [2] * 64),
        (1000, 16, 64, [15] * 66 + [10]),  # the lag scenario's burst: 67 messages
        (10_000, 16, 64, [16] * 625),  # capped by most
        (10, 1, 1, [1] * 10),  # RUN_BATCH_MAX = 1: batching off
        (7, 3, 2, [3, 3, 1]),
    ],
)
def test_a_burst_is_cut_into_at_least_spread_messages_of_at_most_most_runs(
    count: int, most: int, spread: int, sizes: list[int]
) -> None:
    pks = list(range(100, 100 + count))
    groups = sending.batch_split(pks, most=most, spread=spread)
    assert [len(g) for g in groups] == sizes
    assert [pk for g in groups for pk in g] == pks  # every run once, in order


def test_a_burst_goes_out_as_execute_runs_messages_per_priority_queue(broker: redis.Redis, settings: Any) -> None:
    settings.ECHOFLOW = {**settings.ECHOFLOW, "RUN_BATCH_MAX": 3, "RUN_BATCH_SPREAD": 2}
    rows = [(pk, 5) for pk in range(1, 8)] + [(8, 9), (9, 9)]
    sending.send_runs(rows)
    default = _messages(broker, "echoflow")
    assert [(m["headers"]["task"], _body(m)[0]) for m in default] == [
        ("echoflow.execute_runs", [[1, 2, 3]]),
        ("echoflow.execute_runs", [[4, 5, 6]]),
        ("echoflow.execute_run", [7]),
    ]
    # Two runs to the high queue: fewer than twice the spread, so one message each.
    assert [_body(m)[0] for m in _messages(broker, "echoflow.high")] == [[8], [9]]
    assert len({m["headers"]["id"] for m in default}) == 3


def test_a_part_of_a_burst_whose_rest_follows_goes_out_in_full_messages(settings: Any) -> None:
    settings.ECHOFLOW = {**settings.ECHOFLOW, "RUN_BATCH_MAX": 16, "RUN_BATCH_SPREAD": 64}
    rows = [(pk, 5) for pk in range(1, 257)]
    # On its own, 256 runs are spread over 64 messages of 4, for 64 worker processes to share.
    assert [len(ids) for ids in sending.runs_messages(rows)["echoflow"]] == [4] * 64
    with sending.more_follows():
        parts = sending.runs_messages(rows)["echoflow"]
        assert [len(ids) for ids in sending.runs_messages(rows[:20])["echoflow"]] == [16, 4]
    assert [len(ids) for ids in parts] == [16] * 16
    assert [pk for ids in parts for pk in ids] == [pk for pk, _ in rows]
    # Only inside the block.
    assert [len(ids) for ids in sending.runs_messages(rows)["echoflow"]] == [4] * 64


def test_runs_sent_to_the_front_are_taken_before_those_waiting_in_their_order(broker: redis.Redis) -> None:
    sending.send_runs([(1, 5), (2, 5)])
    sending.send_runs([(10, 5), (11, 5), (12, 5)], front=True)
    assert [_body(m)[0] for m in _messages(broker, "echoflow")] == [[10], [11], [12], [1], [2]]


@pytest.mark.django_db
def test_a_batch_gives_back_only_its_runs_still_queued_at_the_front(org: Organization, broker: redis.Redis) -> None:
    base = {"trigger_kind": "cron", "cron": "0 0 1 1 *", "action_name": "echoflow.noop"}
    schedules = [
        schedule_create(organization=org, data={**base, "name": f"g{i}", "priority": priority})
        for i, priority in enumerate((5, 5, 9))
    ]
    runs = [schedule_run_now(schedule=s)[0] for s in schedules]
    Run.objects.filter(pk=runs[1].pk).update(status=RunStatus.CANCELLED)
    sending.send_runs([(999, 5)])
    sending.runs_give_back([runs[2].pk, runs[1].pk, runs[0].pk])
    assert [_body(m)[0] for m in _messages(broker, "echoflow")] == [[runs[0].pk], [999]]
    assert [_body(m)[0] for m in _messages(broker, "echoflow.high")] == [[runs[2].pk]]


def test_task_ids_and_delivery_tags_are_distinct_version_4_uuids() -> None:
    ids = sending._uuid4s(2000)
    assert len(set(ids)) == 2000
    for text in ids:
        parsed = uuid.UUID(text)
        assert (str(parsed), parsed.version, parsed.variant) == (text, 4, uuid.RFC_4122)


def test_each_run_goes_to_its_priority_queue_in_order(broker: redis.Redis) -> None:
    rows = [(1, 9), (2, 5), (3, 0), (4, 7), (5, 4), (6, 3)]
    sending.send_runs(rows)
    got = {queue: [_body(m)[0][0] for m in _messages(broker, queue)] for queue in RUN_QUEUES}
    assert got == {"echoflow.high": [1, 4], "echoflow": [2, 5], "echoflow.low": [3, 6]}


def test_other_transports_eager_mode_and_routed_queues_keep_apply_async(monkeypatch: pytest.MonkeyPatch) -> None:
    # The in-memory transport stands for the embedded filesystem broker: not Redis.
    with Connection("memory://") as connection, connection.Producer() as producer:
        assert not sending.direct_publish_supported(app, producer, queues={"echoflow"})
    with app.producer_or_acquire() as producer:
        # A queue routed through a topic exchange is left to kombu's routing.
        app.amqp.queues.add(Queue("echoflow.topical", Exchange("topical", type="topic"), routing_key="t.#"))
        try:
            assert not sending.direct_publish_supported(app, producer, queues={"echoflow", "echoflow.topical"})
        finally:
            del app.amqp.queues["echoflow.topical"]
        assert sending.direct_publish_supported(app, producer, queues={"echoflow"})
        monkeypatch.setitem(app.conf, "task_always_eager", True)
        assert not sending.direct_publish_supported(app, producer, queues={"echoflow"})


def test_publish_signal_receivers_still_see_every_message(broker: redis.Redis) -> None:
    seen: list[Any] = []

    def receiver(sender: Any = None, headers: Any = None, **kwargs: Any) -> None:
        seen.append(headers["argsrepr"])

    signals.before_task_publish.connect(receiver)
    try:
        sending.send_runs([(7, 5), (8, 5)])
    finally:
        signals.before_task_publish.disconnect(receiver)
    assert seen == ["(7,)", "(8,)"]
    assert [_body(m)[0] for m in _messages(broker, "echoflow")] == [[7], [8]]


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_executes_directly_published_runs(org: Organization, celery_worker_thread: object) -> None:
    created = timezone.now() - timedelta(minutes=2)
    schedules = [
        schedule_create(
            organization=org,
            data={
                "name": f"s{i}",
                "trigger_kind": "cron",
                "cron": "* * * * *",
                "action_name": "echoflow.echo",
                "payload": {"n": i},
                "priority": priority,
                "overlap_policy": "allow_all",
            },
            now=created,
        )
        for i, priority in enumerate((9, 5, 1))
    ]
    adhoc, _ = schedule_run_now(schedule=schedules[0])
    with app.producer_or_acquire() as producer:
        assert sending.direct_publish_supported(app, producer, queues=set(RUN_QUEUES))
    tick = dispatch_tick()
    # Three runs written and sent by the claiming batch, the run-now one by the send pass.
    assert (tick.created, tick.enqueued) == (3, 4)
    runs = {r.schedule_id: r.pk for r in Run.objects.exclude(pk=adhoc.pk)}
    ids = [runs[s.pk] for s in schedules] + [adhoc.pk]
    wait_until(
        lambda: set(Run.objects.filter(pk__in=ids).values_list("status", flat=True)) == {RunStatus.SUCCEEDED},
        what="the four runs to succeed",
    )
    assert [Run.objects.get(pk=pk).output for pk in ids] == [{"n": 0}, {"n": 1}, {"n": 2}, {"n": 0}]
    assert set(Run.objects.filter(pk__in=ids).values_list("attempts", flat=True)) == {1}


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_executes_a_burst_sent_as_batches(
    org: Organization, celery_worker_thread: object, settings: Any
) -> None:
    settings.ECHOFLOW = {**settings.ECHOFLOW, "RUN_BATCH_MAX": 4, "RUN_BATCH_SPREAD": 2}
    created = timezone.now() - timedelta(minutes=2)
    base = {"trigger_kind": "cron", "cron": "* * * * *", "action_name": "echoflow.echo", "overlap_policy": "allow_all"}
    for i in range(12):
        schedule_create(organization=org, data={**base, "name": f"b{i}", "payload": {"n": i}}, now=created)
    tasks: list[tuple[str, Any]] = []

    def prerun(sender: Any = None, args: Any = None, **kwargs: Any) -> None:
        tasks.append((sender.name, args))

    signals.task_prerun.connect(prerun)
    try:
        tick = dispatch_tick()
        assert (tick.created, tick.enqueued) == (12, 12)
        wait_until(
            lambda: Run.objects.filter(status=RunStatus.SUCCEEDED).count() == 12, what="the twelve runs to succeed"
        )
    finally:
        signals.task_prerun.disconnect(prerun)
    # Three messages of four runs each, every run executed once, with its own attempt and output.
    assert sorted(name for name, _ in tasks) == ["echoflow.execute_runs"] * 3
    carried = sorted(pk for _, args in tasks for pk in args[0])
    assert carried == sorted(Run.objects.values_list("pk", flat=True))
    assert set(Run.objects.values_list("attempts", flat=True)) == {1}
    outputs: list[Any] = list(Run.objects.values_list("output", flat=True))
    assert sorted(output["n"] for output in outputs) == list(range(12))
