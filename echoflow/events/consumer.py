"""Reading the event stream with a Redis consumer group.

Every group gets every event once; the consumers of one group share them. A message is acknowledged (``XACK``)
only after the handler returned, so a consumer that dies mid-message leaves it *pending*; any consumer of the
group reclaims pending messages idle for longer than ``claim_idle_seconds`` (``XAUTOCLAIM``) and handles them
again. Delivery is therefore at least once: handlers must tolerate duplicates (the envelope ``id`` is stable).

A message delivered more than ``max_deliveries`` times (its handler keeps failing) is copied to the dead-letter
stream ``<stream>:dead`` and acknowledged, so one bad message cannot block a group forever.

    from echoflow.events.consumer import EventConsumer

    def on_event(event):                      # event: StreamEvent
        print(event.type, event.envelope["run"])

    EventConsumer(group="billing", types=["run.succeeded"]).run(on_event)

Events of other types are acknowledged without calling the handler: with ``types``, the group only cares about
those. See docs/events.md for the envelope.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings

logger = logging.getLogger(__name__)


class ConsumerConfigError(ValueError):
    """The consumer cannot run as configured (no Redis, bad group name)."""


@dataclass(frozen=True)
class StreamEvent:
    stream_id: str
    type: str
    envelope: dict[str, Any]
    deliveries: int = 1

    @property
    def id(self) -> str:
        return str(self.envelope.get("id", ""))

    @property
    def data(self) -> dict[str, Any]:
        data = self.envelope.get("data")
        return data if isinstance(data, dict) else {}


Handler = Callable[[StreamEvent], None]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def type_matches(patterns: Iterable[str], event_type: str) -> bool:
    """``*`` matches all, ``run.*`` every ``run.`` type, anything else itself."""
    for pattern in patterns:
        if pattern == "*" or pattern == event_type:
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class EventConsumer:
    """One consumer of a consumer group on the event stream (``EVENTS_STREAM`` on ``EVENTS_REDIS_URL``)."""

    def __init__(
        self,
        *,
        group: str,
        consumer: str | None = None,
        types: Iterable[str] | None = None,
        client: redis.Redis | None = None,
        stream: str | None = None,
        start: str = "$",
        claim_idle_seconds: float = 60.0,
        batch_size: int = 100,
        max_deliveries: int = 5,
        block_ms: int = 5000,
    ) -> None:
        if not group or any(c.isspace() for c in group):
            raise ConsumerConfigError(f"group: {group!r} is not a valid consumer group name")
        if client is None:
            url = settings.EVENTS_REDIS_URL
            if not url:
                raise ConsumerConfigError("no event stream: set REDIS_URL (or EVENTS_REDIS_URL)")
            # The socket timeout must outlast a blocking read.
            client = redis.Redis.from_url(
                url, socket_timeout=block_ms / 1000 + 10, socket_connect_timeout=5, health_check_interval=30
            )
        self.client = client
        self.group = group
        self.consumer = consumer or default_consumer_name()
        self.types = [t.strip() for t in types or [] if t.strip()]
        self.stream = stream or settings.EVENTS_STREAM
        self.dead_letter_stream = f"{self.stream}:dead"
        self.start = start
        self.claim_idle_ms = max(int(claim_idle_seconds * 1000), 1)
        self.batch_size = batch_size
        self.max_deliveries = max_deliveries
        self.block_ms = block_ms

    # --- the group ----------------------------------------------------------------------------------------------
    def ensure_group(self) -> None:
        """Create the group (and the stream) if missing; new groups start at ``start`` ("$": only new events,
        "0": everything still in the stream)."""
        try:
            self.client.xgroup_create(self.stream, self.group, id=self.start, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def pending_count(self) -> int:
        """Messages delivered to this group and not acknowledged yet (all consumers)."""
        info = self.client.xpending(self.stream, self.group)
        return int(info["pending"] if isinstance(info, dict) else info[0])

    # --- reading ------------------------------------------------------------------------------------------------
    def _events(self, entries: Iterable[Any], deliveries: dict[str, int] | None = None) -> list[StreamEvent]:
        events = []
        for stream_id, fields in entries:
            sid = _text(stream_id)
            if fields is None:  # trimmed from the stream while pending (Redis < 7 reports these)
                self.client.xack(self.stream, self.group, sid)
                continue
            decoded = {_text(k): _text(v) for k, v in fields.items()}
            try:
                envelope = json.loads(decoded.get("envelope", ""))
                if not isinstance(envelope, dict):
                    raise ValueError("the envelope is not a JSON object")
            except ValueError as exc:
                self._dead_letter(sid, decoded, f"unreadable envelope: {exc}")
                continue
            event_type = decoded.get("type") or str(envelope.get("type", ""))
            events.append(StreamEvent(sid, event_type, envelope, (deliveries or {}).get(sid, 1)))
        return events

    def read_own_pending(self, *, count: int | None = None) -> list[StreamEvent]:
        """Messages this consumer (by name) received before and never acknowledged: a restart continues them."""
        reply = self.client.xreadgroup(self.group, self.consumer, {self.stream: "0"}, count=count or self.batch_size)
        entries = reply[0][1] if reply else []
        return self._events(entries, self._delivery_counts([_text(e[0]) for e in entries]))

    def read(self, *, block_ms: int | None = None, count: int | None = None) -> list[StreamEvent]:
        """New messages for this group, waiting up to ``block_ms`` for the first one."""
        reply = self.client.xreadgroup(
            self.group,
            self.consumer,
            {self.stream: ">"},
            count=count or self.batch_size,
            block=self.block_ms if block_ms is None else block_ms,
        )
        return self._events(reply[0][1] if reply else [])

    def reclaim(self, *, count: int | None = None) -> list[StreamEvent]:
        """Take over messages pending on any consumer of the group for longer than ``claim_idle_seconds`` (their
        consumer died or hangs) with XAUTOCLAIM, so they are handled here."""
        limit = count or self.batch_size
        claimed: list[Any] = []
        start = "0-0"
        while len(claimed) < limit:
            reply = self.client.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                min_idle_time=self.claim_idle_ms,
                start_id=start,
                count=limit - len(claimed),
            )
            start = _text(reply[0])
            claimed.extend(reply[1])
            if start == "0-0":
                break
        if claimed:
            logger.info("consumer %s/%s reclaimed %d pending message(s)", self.group, self.consumer, len(claimed))
        return self._events(claimed, self._delivery_counts([_text(e[0]) for e in claimed if e[1] is not None]))

    def _delivery_counts(self, stream_ids: list[str]) -> dict[str, int]:
        if not stream_ids:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for sid in stream_ids:
            pipe.xpending_range(self.stream, self.group, min=sid, max=sid, count=1)
        counts = {}
        for sid, rows in zip(stream_ids, pipe.execute(), strict=True):
            if rows:
                counts[sid] = int(rows[0]["times_delivered"])
        return counts

    # --- handling -----------------------------------------------------------------------------------------------
    def ack(self, *stream_ids: str) -> int:
        return int(self.client.xack(self.stream, self.group, *stream_ids)) if stream_ids else 0

    def _dead_letter(self, stream_id: str, fields: dict[str, str], reason: str) -> None:
        logger.error("consumer %s: message %s moved to %s: %s", self.group, stream_id, self.dead_letter_stream, reason)
        entry: dict[Any, Any] = {**fields, "source_id": stream_id, "group": self.group, "reason": reason[:500]}
        self.client.xadd(
            self.dead_letter_stream,
            entry,
            maxlen=100_000,
            approximate=True,
        )
        self.client.xack(self.stream, self.group, stream_id)

    def handle(self, events: Iterable[StreamEvent], handler: Handler) -> int:
        """Call ``handler`` for each wanted event and acknowledge it; returns how many the handler took.

        A handler exception leaves the message pending (it is reclaimed and retried after the idle time).
        """
        handled = 0
        for event in events:
            if self.types and not type_matches(self.types, event.type):
                self.ack(event.stream_id)
                continue
            if event.deliveries > self.max_deliveries:
                fields = {"type": event.type, "envelope": json.dumps(event.envelope, separators=(",", ":"))}
                self._dead_letter(event.stream_id, fields, f"delivered {event.deliveries} times without success")
                continue
            try:
                handler(event)
            except Exception:
                logger.exception(
                    "consumer %s: handler failed on %s (%s); it stays pending", self.group, event.stream_id, event.type
                )
                continue
            self.ack(event.stream_id)
            handled += 1
        return handled

    def run(
        self,
        handler: Handler,
        *,
        should_stop: Callable[[], bool] | None = None,
        max_events: int | None = None,
        exit_when_idle: bool = False,
    ) -> int:
        """Consume until ``should_stop()`` is true, ``max_events`` were handled, or (with ``exit_when_idle``) there
        is nothing left to read. Each loop reclaims stale pending messages first, then reads new ones.
        Returns how many events the handler took."""
        self.ensure_group()
        stop = should_stop or (lambda: False)

        def room() -> int:
            # Never take more messages than may still be handled: the rest stay in the stream for others.
            return self.batch_size if max_events is None else max(min(self.batch_size, max_events - total), 0)

        total = 0
        total += self.handle(self.read_own_pending(count=room() or 1), handler)
        while not stop() and room() > 0:
            reclaimed = self.reclaim(count=room())
            total += self.handle(reclaimed, handler)
            if stop() or room() == 0:
                break
            block = min(self.block_ms, 100) if exit_when_idle else self.block_ms
            fresh = self.read(block_ms=block, count=room())
            total += self.handle(fresh, handler)
            if exit_when_idle and not fresh and not reclaimed:
                break
        return total


def consume(
    handler: Handler,
    *,
    group: str,
    types: Iterable[str] | None = None,
    **options: Any,
) -> int:
    """Shortcut: ``consume(handler, group="billing", types=["run.failed"])`` runs until interrupted."""
    consumer = EventConsumer(group=group, types=types, **options)
    try:
        return consumer.run(handler)
    except KeyboardInterrupt:
        return 0
