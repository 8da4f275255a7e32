"""The Redis transport (echoflow/broker.py) carries messages as kombu's does, builds one client per channel instead
of one per command, and builds a new one when kombu replaces its pool (after a fork)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.conf import settings
from kombu import Connection

from echoflow.broker import RedisChannel, RedisTransport
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
