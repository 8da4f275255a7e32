"""The Redis transport (echoflow/broker.py) carries messages as kombu's does, builds one client per channel instead
of one per command, and builds a new one when kombu replaces its pool (after a fork)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from kombu import Connection

from echoflow.broker import ACK_FLUSH_INTERVAL, RedisChannel, RedisTransport
from echoflow.celery import app

pytestmark = [pytest.mark.redis]


@pytest.fixture
def connection() -> Iterator[Connection]:
    with app.connection_for_write() as conn:
        yield conn


def test_the_app_uses_it_for_a_redis_broker(connection: Connection) -> None:
    assert settings.CELERY_BROKER_URL.startswith("redis://")
    assert settings.CELERY_BROKER_TRANSPORT == "echoflow.broker:RedisTransport"
    assert isinstance(connection.transport, RedisTransport)
    assert isinstance(connection.default_channel, RedisChannel)


def test_messages_go_through_with_acks_and_rejects(connection: Connection) -> None:
    queue = connection.SimpleQueue("echoflow.test-broker")
    try:
        queue.clear()
        for body in ({"n": 1}, {"n": 2}):
            queue.put(body)
        first = queue.get(timeout=5)
        first.ack()
        second = queue.get(timeout=5)
        second.requeue()  # back on the queue, then delivered again
        again = queue.get(timeout=5)
        again.ack()

        assert (first.payload, again.payload) == ({"n": 1}, {"n": 2})
        with pytest.raises(queue.Empty):
            queue.get(block=False)
    finally:
        queue.clear()
        queue.close()


def test_one_client_serves_every_command_until_the_pool_is_replaced(connection: Connection) -> None:
    channel = connection.default_channel
    assert isinstance(channel, RedisChannel)
    with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
        assert first is second
        assert first.connection_pool is channel.pool
        assert first.ping()
    given = object()
    with channel.conn_or_acquire(given) as passed:  # a caller's own client is used as it is
        assert passed is given

    channel._disconnect_pools()  # type: ignore[attr-defined]  # what kombu does in a forked child
    with channel.conn_or_acquire() as after:
        assert after is not first
        assert after.connection_pool is channel.pool
        assert after.ping()


def _unacked(channel: RedisChannel) -> set[str]:
    with channel.conn_or_acquire() as client:
        return {tag.decode() for tag in client.hkeys(channel.unacked_key)}


@pytest.fixture
def deferring(connection: Connection) -> Iterator[Connection]:
    """The transport as a worker's event loop runs it: acknowledgements deferred (the loop's timer is not running)."""
    transport = connection.transport
    assert isinstance(transport, RedisTransport)
    transport.defer_acks = True
    yield connection
    transport.defer_acks = False


def test_an_ack_is_written_with_the_next_reservation(deferring: Connection) -> None:
    queue = deferring.SimpleQueue("echoflow.test-broker-acks")
    channel = deferring.default_channel
    assert isinstance(channel, RedisChannel)
    try:
        queue.clear()
        for n in (1, 2):
            queue.put({"n": n})
        first = queue.get(timeout=5)
        assert first.delivery_tag in _unacked(channel)
        first.ack()
        # Acknowledged: its prefetch slot is free at once; its unacked record goes with the next reservation.
        assert channel.qos.can_consume()
        assert first.delivery_tag in _unacked(channel)
        second = queue.get(timeout=5)
        assert _unacked(channel) & {first.delivery_tag, second.delivery_tag} == {second.delivery_tag}

        second.ack()
        assert second.delivery_tag in _unacked(channel)
        channel.flush_acks()  # what the event loop's timer does when no message follows
        assert second.delivery_tag not in _unacked(channel)
    finally:
        queue.clear()
        queue.close()


def test_a_closing_channel_writes_its_pending_acks_and_restores_only_unacked_messages(deferring: Connection) -> None:
    name = "echoflow.test-broker-close"
    channel = deferring.channel()
    assert isinstance(channel, RedisChannel)
    queue = deferring.SimpleQueue(name, channel=channel)
    queue.clear()
    for n in (1, 2):
        queue.put({"n": n})
    done = queue.get(timeout=5)
    held = queue.get(timeout=5)
    done.ack()
    tags = {done.delivery_tag, held.delivery_tag}
    assert _unacked(channel) & tags == tags
    channel.close()

    other = deferring.default_channel
    assert isinstance(other, RedisChannel)
    assert _unacked(other) & tags == set()
    again = deferring.SimpleQueue(name)
    try:
        # The unacknowledged message is back on the queue; the acknowledged one is not.
        assert again.get(timeout=5).payload == {"n": 2}
        with pytest.raises(again.Empty):
            again.get(block=False)
    finally:
        again.clear()
        again.close()


def test_acks_are_written_at_once_outside_an_event_loop(connection: Connection) -> None:
    queue = connection.SimpleQueue("echoflow.test-broker-plain")
    channel = connection.default_channel
    assert isinstance(channel, RedisChannel)
    try:
        queue.clear()
        queue.put({"n": 1})
        message = queue.get(timeout=5)
        message.ack()
        assert message.delivery_tag not in _unacked(channel)
    finally:
        queue.clear()
        queue.close()


class FakeTimer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """The parts of kombu's hub that the transport's registration uses."""

    def __init__(self) -> None:
        self.timers: list[tuple[float, Any, FakeTimer]] = []
        self.on_tick: set[Any] = set()
        self.poller = None

    def call_repeatedly(self, delay: float, callback: Any, *args: Any) -> FakeTimer:
        timer = FakeTimer()
        self.timers.append((delay, callback, timer))
        return timer

    def add_reader(self, *args: Any) -> None:
        pass

    def remove_reader(self, *args: Any) -> None:
        pass

    def remove(self, *args: Any) -> None:
        pass


def test_the_event_loop_flushes_acks_on_a_timer_that_ends_with_the_connection() -> None:
    with app.connection_for_write() as conn:
        transport = conn.transport
        assert isinstance(transport, RedisTransport)
        loop = FakeLoop()
        transport.register_with_event_loop(conn.connection, loop)
        assert transport.defer_acks
        ours = [(delay, timer) for delay, callback, timer in loop.timers if callback == transport._flush_acks]
        assert [delay for delay, _ in ours] == [ACK_FLUSH_INTERVAL]

        transport.register_with_event_loop(conn.connection, loop)  # registered again: one timer, not two
        live = [timer for _, fn, timer in loop.timers if fn == transport._flush_acks and not timer.cancelled]
        assert len(live) == 1
        conn.close()
        assert live[0].cancelled and not transport.defer_acks
