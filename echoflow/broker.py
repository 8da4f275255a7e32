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
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis


class RedisChannel(kombu_redis.Channel):
    _echoflow_client: Any = None

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


class RedisTransport(kombu_redis.Transport):
    Channel = RedisChannel
