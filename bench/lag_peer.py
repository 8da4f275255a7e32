"""The peer of the lag and memory scenarios: ``celery beat`` with django-celery-beat's DatabaseScheduler.

A Celery app of its own (Django set up for the scheduler's models, same broker) with a bare no-op task. The
scheduler is DatabaseScheduler plus one thing: each message carries the slot beat sent it for (the crontab or
interval time due after the entry's last run) and when it was sent, so the worker measures start - slot the way
EchoFlow's runs do.
Each task appends ``slot sent start finish`` (epoch seconds) to a Redis list.

    celery -A bench.lag_peer beat -S bench.lag_peer:SlotScheduler
    celery -A bench.lag_peer worker -Q bench.lagpeer -c 2
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "echoflow.settings")
django.setup()

from django_celery_beat.schedulers import DatabaseScheduler  # noqa: E402 (needs django.setup())

from bench.celery_peer import peer_app, peer_redis  # noqa: E402

QUEUE = "bench.lagpeer"
PROBE_QUEUE = "bench.probe"
KEY = "bench:lagpeer"

app = peer_app("bench_lag_peer", QUEUE, timezone="UTC")


@app.task(name="bench.lagpeer.noop")
def noop(slot: float = 0.0, sent: float = 0.0) -> None:
    started = time.time()
    peer_redis().rpush(KEY, f"{slot} {sent} {started} {time.time()}")


class SlotScheduler(DatabaseScheduler):
    """DatabaseScheduler whose messages carry their slot: ``kwargs["slot"]``, epoch seconds."""

    def apply_async(self, entry: Any, producer: Any = None, advance: bool = True, **kwargs: Any) -> Any:
        # tick() hands over the entry before it is advanced: last_run_at is the previous send, and the slot is
        # the schedule's next time after it (for a crontab, the whole minute being sent).
        last = entry.last_run_at
        if last.tzinfo is None:
            last = last.replace(tzinfo=UTC)
        remaining = entry.schedule.remaining_estimate(last)
        now = datetime.now(UTC)
        entry.kwargs = {**(entry.kwargs or {}), "slot": (now + remaining).timestamp(), "sent": now.timestamp()}
        return super().apply_async(entry, producer=producer, advance=advance, **kwargs)
