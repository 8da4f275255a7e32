"""Writing events to the outbox and relaying them to the Redis Stream.

``event_record`` is called inside the transaction that changes state, so an event exists if and only if the
change committed. ``outbox_relay`` sends pending events in id order and marks them; when Redis is unreachable
they stay pending and leave, in order, on a later pass.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import redis
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from echoflow.events.models import ENVELOPE_COLUMNS, OutboxEvent, RelayLock, event_envelope

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EventSpec:
    type: str
    organization_id: int | None
    schedule_id: int | None = None
    run_id: int | None = None
    attempt: int | None = None
    data: dict[str, Any] | None = None


def event_record(spec: EventSpec, *, occurred_at: datetime | None = None) -> OutboxEvent:
    return OutboxEvent.objects.create(
        type=spec.type,
        occurred_at=occurred_at or timezone.now(),
        organization_id=spec.organization_id,
        schedule_id=spec.schedule_id,
        run_id=spec.run_id,
        attempt=spec.attempt,
        data=spec.data or {},
    )


def events_record(specs: Iterable[EventSpec], *, occurred_at: datetime | None = None) -> int:
    when = occurred_at or timezone.now()
    rows = [
        OutboxEvent(
            type=s.type,
            occurred_at=when,
            organization_id=s.organization_id,
            schedule_id=s.schedule_id,
            run_id=s.run_id,
            attempt=s.attempt,
            data=s.data or {},
        )
        for s in specs
    ]
    OutboxEvent.objects.bulk_create(rows, batch_size=1000)
    return len(rows)


# XADD only if this event id was not added before: a relayer killed between XADD and marking the row relayed
# would otherwise send the event twice when the next relayer picks the row up again. The marker lives long
# enough to cover any such retry; consumers may also rely on the envelope id being unique.
_XADD_ONCE = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then
  return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'type', ARGV[3], 'envelope', ARGV[4])
end
return false
"""
_DEDUPE_SECONDS = 6 * 3600


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2, health_check_interval=30)


def redis_client() -> redis.Redis | None:
    url = settings.EVENTS_REDIS_URL
    return _client(url) if url else None


def outbox_relay(*, batch_size: int = 500, max_batches: int = 20) -> int:
    """Send pending outbox events to the stream; returns how many were sent.

    Without a configured Redis (the embedded default) the outbox table itself is the event log and nothing is
    relayed.
    """
    client = redis_client()
    if client is None:
        return 0
    RelayLock.objects.get_or_create(name="outbox")
    sent = 0
    for _ in range(max_batches):
        n = _relay_batch(client, batch_size)
        sent += n
        if n < batch_size:
            break
    return sent


def _relay_batch(client: redis.Redis, batch_size: int) -> int:
    with transaction.atomic():
        lock = RelayLock.objects.select_for_update(skip_locked=True).filter(name="outbox").first()
        if lock is None:
            return 0  # another relayer holds the lock and will send these, in order
        # Rows as tuples, not model instances: this runs for every event EchoFlow writes (three per run).
        pending = list(
            OutboxEvent.objects.filter(relayed_at__isnull=True)
            .order_by("id")
            .values_list("id", *ENVELOPE_COLUMNS)[:batch_size]
        )
        if not pending:
            return 0
        try:
            xadd_once = client.register_script(_XADD_ONCE)
            pipe = client.pipeline(transaction=False)
            stream = settings.EVENTS_STREAM
            for _pk, *columns in pending:
                event_id, event_type = columns[0], columns[1]
                xadd_once(
                    keys=[stream, f"{stream}:sent:{event_id}"],
                    args=[
                        _DEDUPE_SECONDS,
                        settings.EVENTS_STREAM_MAXLEN,
                        event_type,
                        json.dumps(event_envelope(*columns), separators=(",", ":")),
                    ],
                    client=pipe,
                )
            replies = pipe.execute()
        except redis.RedisError as exc:
            logger.warning("event relay: Redis unavailable, %d event(s) wait in the outbox: %s", len(pending), exc)
            return 0
        # None: an earlier relayer already added it (and died before marking the row).
        stream_ids = [_text(reply) for reply in replies]
        _mark_relayed([row[0] for row in pending], stream_ids, timezone.now())
        return len(pending)


def _text(reply: object) -> str:
    return reply.decode() if isinstance(reply, bytes) else "" if reply is None else str(reply)


def _mark_relayed(ids: list[int], stream_ids: list[str], now: datetime) -> None:
    """Set relayed_at and each event's stream id, in one statement.

    On PostgreSQL one UPDATE joined to the two arrays. Django's ``bulk_update`` builds a ``CASE WHEN id = ...`` per
    row and column, and building it was a third of the system worker's time when runs were busy
    (docs/benchmarks.md §2); other databases (an embedded install given a Redis) keep it.
    """
    if connection.vendor == "postgresql":
        table = connection.ops.quote_name(OutboxEvent._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} AS o SET relayed_at = %s, stream_id = u.stream_id "
                "FROM unnest(%s::bigint[], %s::text[]) AS u(id, stream_id) WHERE o.id = u.id",
                [now, ids, stream_ids],
            )
        return
    events = [OutboxEvent(pk=pk, relayed_at=now, stream_id=sid) for pk, sid in zip(ids, stream_ids, strict=True)]
    OutboxEvent.objects.bulk_update(events, ["relayed_at", "stream_id"])
