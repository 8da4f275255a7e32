"""Any number of dispatchers may run at once; the database keeps each (schedule, slot) to one run."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connections
from pytest_django.fixtures import Settings as SettingsWrapper

from echoflow.accounts.models import Organization
from runs.dispatcher import dispatch_tick
from runs.models import Run
from runs.run_writes import run_from_schedule, runs_insert
from schedules.models import Schedule
from schedules.services import schedule_create

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _make_schedules(org: Organization, count: int) -> None:
    for i in range(count):
        schedule_create(
            organization=org,
            data={
                "name": f"every minute {i}",
                "trigger_kind": "cron",
                "cron": "* * * * *",
                "action_name": "echoflow.noop",
            },
            now=T0 - timedelta(seconds=30),
        )


def _race(now: datetime, dispatchers: int, created_by: list[int]) -> list[int]:
    """Run ``dispatchers`` ticks at the same instant in threads (each has its own connection)."""
    barrier = threading.Barrier(dispatchers)
    sent: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def sender(rows: list[tuple[int, int]]) -> None:
        with lock:
            sent.extend(pk for pk, _ in rows)

    def dispatcher() -> None:
        try:
            barrier.wait()
            result = dispatch_tick(now=now, sender=sender)
            with lock:
                created_by.append(result.created)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=dispatcher) for _ in range(dispatchers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return sent


def test_two_dispatchers_racing_create_each_run_exactly_once(org: Organization, settings: SettingsWrapper) -> None:
    # Small batches make the two dispatchers interleave claims many times per tick.
    settings.ECHOFLOW = {**settings.ECHOFLOW, "DISPATCH_BATCH_SIZE": 10}
    _make_schedules(org, 200)
    all_sent: list[int] = []
    created_by: list[int] = []
    for minute in range(3):
        all_sent += _race(T0 + timedelta(minutes=minute, seconds=1), dispatchers=2, created_by=created_by)

    slots = list(Run.objects.values_list("schedule_id", "slot"))
    assert len(slots) == 600
    assert len(set(slots)) == 600, "a (schedule, slot) has two runs"
    # Each run is sent to the broker exactly once, by one of the dispatchers.
    assert Counter(all_sent).most_common(1)[0][1] == 1
    assert sorted(all_sent) == sorted(Run.objects.values_list("pk", flat=True))
    assert set(Schedule.objects.values_list("next_run_at", flat=True)) == {T0 + timedelta(minutes=3)}
    assert set(Schedule.objects.values_list("runs_count", flat=True)) == {3}
    assert sum(created_by) == 600


def test_a_stale_dispatcher_cannot_insert_a_duplicate_slot(org: Organization) -> None:
    _make_schedules(org, 3)
    schedules = list(Schedule.objects.all())
    runs = [run_from_schedule(s, slot=T0, due_at=T0, trigger="schedule", now=T0, round_index=1) for s in schedules]
    assert len(runs_insert(runs)) == 3
    # A second dispatcher that planned from an old snapshot writes the same slots again: nothing is inserted.
    again = [run_from_schedule(s, slot=T0, due_at=T0, trigger="schedule", now=T0, round_index=1) for s in schedules]
    assert runs_insert(again) == []
    assert Run.objects.count() == 3
