"""kombu's Redis transport, with one Redis client per channel instead of one per command.

kombu's Redis channel builds a new ``redis.Redis`` client for every command it sends outside its consumer
connection (``Channel.conn_or_acquire``): each acknowledgement, each message it reserves, each batch of task events
and each message a producer sends. The client is only a front for the channel's connection pool, but redis-py
copies its table of ~150 response callbacks into a new case-insensitive dictionary whenever one is built: 11 % of
a worker's main process in the throughput benchmark (docs/benchmarks.md §4), three times per run.

This channel keeps the client it built for as long as the channel uses the same pool (kombu drops the pool after
a fork and on close, and builds another; a client of the old pool is then not reused). A ``redis.Redis`` holds no
connection of its own — each command takes one from the pool and gives it back — so one client serves every
thread. Everything else is kombu's. Selected by ``CELERY_BROKER_TRANSPORT`` in ``echoflow.settings`` for
``redis://`` broker URLs.

Acknowledgements are written to Redis with the next message's reservation instead of in a round trip of their own.
With late acks, kombu removes an acknowledged message from its unacked set (the record from which a dead worker's
messages are restored after ``visibility_timeout``) in one synchronous MULTI/EXEC per message, and records the next
message in another: 14 % and 12 % of a run worker's main process in the lag benchmark (docs/benchmarks.md §2),
while its pool processes waited for it. Here an acknowledgement frees the prefetch slot at once, as kombu's does,
and its removal from the unacked set goes out with the next reservation, in the same transaction; when no message
follows, the worker's event loop writes it within ``ACK_FLUSH_INTERVAL``, and a channel that closes writes it
first. If the worker dies in that window, its acknowledged message is delivered again after the visibility timeout,
as it would be had it died just before acknowledging; every EchoFlow task takes a second delivery as a no-op (a
run is claimed once). Without an event loop (a producer, a blocking consumer) acknowledgements are written at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from time import time
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps

logger = logging.getLogger(__name__)

ACK_FLUSH_INTERVAL = 0.05


class RedisQoS(kombu_redis.QoS):
    channel: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acks_lock = threading.Lock()  # the threads pool acknowledges from its own threads
        self._acks: list[Any] = []

    def _take_acks(self) -> list[Any]:
        with self._acks_lock:
            tags, self._acks = self._acks, []
        return tags

    def _give_back(self, tags: list[Any]) -> None:
        with self._acks_lock:
            self._acks[:0] = tags

    def _forget(self, pipe: Any, tags: list[Any]) -> Any:
        """Queue the removal of acknowledged messages from the unacked set on ``pipe``."""
        return pipe.zrem(self.unacked_index_key, *tags).hdel(self.unacked_key, *tags) if tags else pipe

    def append(self, message: Any, delivery_tag: Any) -> None:
        delivery = message.delivery_info
        tags = self._take_acks()
        try:
            with self.pipe_or_acquire() as pipe:
                self._forget(pipe, tags).zadd(self.unacked_index_key, {delivery_tag: time()}).hset(
                    self.unacked_key, delivery_tag, dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
                ).execute()
        except Exception:
            self._give_back(tags)
            raise
        virtual.QoS.append(self, message, delivery_tag)

    def ack(self, delivery_tag: Any) -> None:
        if not self.channel.connection.defer_acks:
            super().ack(delivery_tag)
            return
        with self._acks_lock:
            self._acks.append(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)  # the prefetch slot is free now

    def flush_acks(self) -> None:
        """Write the acknowledgements that no reservation has carried yet."""
        tags = self._take_acks()
        if not tags:
            return
        try:
            with self.pipe_or_acquire() as pipe:
                self._forget(pipe, tags).execute()
        except Exception:
            self._give_back(tags)
            raise


class RedisChannel(kombu_redis.Channel):
    QoS = RedisQoS
    _echoflow_client: Any = None
    _qos: Any

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        pool = self.pool
        cached = self._echoflow_client
        if cached is None or cached.connection_pool is not pool:
            cached = self._echoflow_client = self._create_client()  # type: ignore[attr-defined]
        yield cached

    def flush_acks(self) -> None:
        qos = self._qos
        if isinstance(qos, RedisQoS):
            qos.flush_acks()

    def close(self) -> None:
        if not self.closed:
            try:
                self.flush_acks()
            except Exception:  # closing (often because Redis went away): the messages come back after the timeout
                logger.warning("could not write the last acknowledgements before closing the channel", exc_info=True)
        super().close()


class RedisTransport(kombu_redis.Transport):
    Channel = RedisChannel
    # Set once the transport runs in a worker's event loop, which flushes acknowledgements on a timer.
    defer_acks = False
    _acks_timer: Any = None
    channels: list[Any]

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        super().register_with_event_loop(connection, loop)
        if self._acks_timer is not None:
            self._acks_timer.cancel()
        self._acks_timer = loop.call_repeatedly(ACK_FLUSH_INTERVAL, self._flush_acks)
        self.defer_acks = True

    def close_connection(self, connection: Any) -> None:
        super().close_connection(connection)  # each channel writes its pending acknowledgements as it closes
        # Celery makes a new connection (and transport) when it reconnects; this one's timer must not outlive it.
        if self._acks_timer is not None:
            self._acks_timer.cancel()
            self._acks_timer = None
        self.defer_acks = False

    def _flush_acks(self) -> None:
        for channel in list(self.channels):
            if isinstance(channel, RedisChannel) and not channel.closed:
                try:
                    channel.flush_acks()
                except Exception:  # the next tick tries again; the connection's own error handling reconnects
                    logger.warning("could not write acknowledgements; will retry", exc_info=True)
