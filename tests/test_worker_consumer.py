"""The worker consumer (echoflow/worker_consumer.py) publishes task events in batches, and every event still
arrives: what Flower and ``celery events`` show is unchanged, including the events of the last task of a worker
that is told to stop."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.utils.imports import symbol_by_name
from django.conf import settings

from echoflow.worker_consumer import EVENT_FLUSH_DELAY, Consumer
from tests.conftest import wait_until
from tests.events_app import QUEUE, app, nap

pytestmark = [pytest.mark.redis]

REPO = Path(__file__).resolve().parent.parent


class EventTap:
    """Every task-event message the worker publishes (kombu's Redis fanout: a PUBLISH on the celeryev channel)."""

    def __init__(self, url: str) -> None:
        self.messages: list[list[dict[str, Any]]] = []
        client = self._client = redis.Redis.from_url(url)  # kept: a collected client closes its pool's connections
        self._pubsub = client.pubsub()
        # kombu prefixes fanout channels with the database number: only this test's broker database.
        self._pubsub.psubscribe(f"/{client.connection_pool.connection_kwargs.get('db', 0)}.celeryev/task*")
        self._pubsub.get_message(timeout=5)  # the subscription's confirmation
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            raw = self._pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if raw is None:
                continue
            envelope = json.loads(raw["data"])
            body = envelope["body"]
            if envelope.get("properties", {}).get("body_encoding") == "base64":
                body = base64.b64decode(body)
            events = json.loads(body)
            self.messages.append(events if isinstance(events, list) else [events])

    def events(self) -> list[dict[str, Any]]:
        return [event for message in list(self.messages) for event in message]

    def of(self, kind: str) -> list[str]:
        return [event["uuid"] for event in self.events() if event["type"] == kind]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._pubsub.close()
        self._client.close()


@pytest.fixture
def broker_url() -> str:
    app.conf.update(broker_url=settings.CELERY_BROKER_URL)  # where the test sends its tasks
    return settings.CELERY_BROKER_URL


@pytest.fixture
def tap(broker_url: str) -> Iterator[EventTap]:
    tapped = EventTap(broker_url)
    yield tapped
    tapped.close()


@pytest.fixture
def worker(broker_url: str, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    redis.Redis.from_url(broker_url).delete(QUEUE)
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tests.events_app", "worker", "-P", "prefork", "-c", "2",
         "-Q", QUEUE, "-n", f"events-test-{os.getpid()}@%h", "-l", "INFO", "--without-gossip", "--without-mingle"],
        cwd=REPO, env={**os.environ, "EVENTS_TEST_BROKER": broker_url}, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)
    log.close()


def test_the_app_uses_it() -> None:
    from echoflow.celery import app as echoflow_app

    assert symbol_by_name(echoflow_app.conf.worker_consumer) is Consumer


def test_every_task_event_arrives_in_fewer_messages(tap: EventTap, worker: subprocess.Popen[bytes]) -> None:
    ids = [nap.apply_async(args=(0.01,)).id for _ in range(40)]

    def all_succeeded() -> bool:
        return set(tap.of("task-succeeded")) >= set(ids)

    wait_until(all_succeeded, timeout=60, what="a task-succeeded event for each of the 40 tasks")
    for kind in ("task-received", "task-started", "task-succeeded"):
        seen = Counter(tap.of(kind))
        assert all(seen[task_id] == 1 for task_id in ids), f"{kind}: {seen}"
    events = [event for event in tap.events() if event["uuid"] in ids]
    assert len(events) == 3 * len(ids)
    # Batched: a message carries the events of a 50 ms window (Celery alone publishes about one per event).
    assert len(tap.messages) < len(events) / 2


def test_a_running_worker_leaves_no_finished_task_in_the_unacked_set(
    broker_url: str, worker: subprocess.Popen[bytes]
) -> None:
    """Acknowledgements go out with the next reservation (echoflow/broker.py); after the last task the worker's
    event loop writes them on its own, while the worker keeps running."""
    client = redis.Redis.from_url(broker_url)
    ids = [nap.apply_async(args=(0.01,)).id for _ in range(20)]

    def held() -> list[str]:
        records = [value.decode() for value in client.hvals("unacked")]
        return [task_id for task_id in ids if any(task_id in record for record in records)]

    wait_until(lambda: client.llen(QUEUE) == 0 and not held(), timeout=60, what="every task taken and acknowledged")
    assert worker.poll() is None


def test_the_last_events_are_published_when_the_worker_stops(tap: EventTap, worker: subprocess.Popen[bytes]) -> None:
    task_id = nap.apply_async(args=(1.0,)).id
    wait_until(lambda: task_id in tap.of("task-started"), timeout=60, what="the task to start")
    worker.send_signal(signal.SIGTERM)  # warm shutdown: the task finishes, then the worker stops
    assert worker.wait(timeout=60) == 0
    wait_until(lambda: task_id in tap.of("task-succeeded"), timeout=5, what="the last task's task-succeeded event")


class FakeHub:
    def __init__(self) -> None:
        self.timers: list[tuple[float, Any]] = []

    def call_later(self, delay: float, callback: Any) -> None:
        self.timers.append((delay, callback))

    def fire(self) -> None:
        timers, self.timers = self.timers, []
        for _, callback in timers:
            callback()


class FakeDispatcher:
    def __init__(self, fail: bool = False) -> None:
        self.flushes = 0
        self.fail = fail

    def flush(self) -> None:
        self.flushes += 1
        if self.fail:
            raise ConnectionError("broker gone")


def _consumer(hub: FakeHub | None, dispatcher: FakeDispatcher) -> Consumer:
    consumer = Consumer.__new__(Consumer)  # only the parts these methods use
    consumer.hub = hub
    consumer.event_dispatcher = dispatcher
    return consumer


def test_one_flush_per_window_and_a_new_window_after_it() -> None:
    hub, dispatcher = FakeHub(), FakeDispatcher()
    consumer = _consumer(hub, dispatcher)
    for _ in range(5):
        consumer.on_send_event_buffered()
    assert [delay for delay, _ in hub.timers] == [EVENT_FLUSH_DELAY]
    assert dispatcher.flushes == 0
    hub.fire()
    assert dispatcher.flushes == 1
    consumer.on_send_event_buffered()
    assert len(hub.timers) == 1


def test_a_reconnected_consumer_schedules_its_own_flush() -> None:
    hub, old = FakeHub(), FakeDispatcher()
    consumer = _consumer(hub, old)
    consumer.on_send_event_buffered()
    hub.timers.clear()  # the old connection's timer is gone with it
    consumer.event_dispatcher = new = FakeDispatcher()
    consumer.on_send_event_buffered()
    hub.fire()
    assert (old.flushes, new.flushes) == (0, 1)


@pytest.mark.parametrize("fail", [False, True])
def test_shutdown_flushes_the_buffer_first_and_stops_even_if_that_fails(fail: bool) -> None:
    dispatcher = FakeDispatcher(fail=fail)
    consumer = _consumer(FakeHub(), dispatcher)
    order: list[str] = []
    consumer.perform_pending_operations = lambda: order.append(f"flushed {dispatcher.flushes}")  # type: ignore[method-assign]
    consumer.blueprint = type("Blueprint", (), {"shutdown": lambda self, c: order.append("blueprint")})()
    consumer.shutdown()
    assert order == ["flushed 1", "blueprint"]
