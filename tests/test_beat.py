"""Beat keeps EchoFlow's system tasks in step with the clock (echoflow/beat.py): the dispatch tick fires just after
every whole second, so a slot is claimed within milliseconds of it instead of anywhere up to a second later; the
other system tasks half a second later; periodic tasks an operator adds keep django-celery-beat's timing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from celery import schedules
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from echoflow.beat import DISPATCH_OFFSET, DISPATCH_TASK, AlignedInterval, EchoFlowEntry, EchoFlowScheduler
from echoflow.celery import app
from echoflow.system_tasks import SYSTEM_TASKS, system_tasks_install

T0 = datetime(2026, 12, 2, 9, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def due(schedule: schedules.schedule, now: datetime, last_run_at: datetime) -> tuple[bool, float]:
    with time_machine.travel(now, tick=False):
        state = schedule.is_due(last_run_at)
    return bool(state.is_due), float(state.next)


def test_an_aligned_interval_is_due_once_per_instant_and_waits_for_the_next() -> None:
    every_second = AlignedInterval(timedelta(seconds=1), 0.01)

    # Fired at 09:00:00.012; at .5 it waits until 09:00:01.010, then is due.
    assert due(every_second, at(0.5), at(0.012)) == (False, pytest.approx(0.51))
    assert due(every_second, at(1.0), at(0.012)) == (False, pytest.approx(0.01))
    assert due(every_second, at(1.011), at(0.012)) == (True, pytest.approx(0.999))
    # Not due again within the same second once it has fired there.
    assert due(every_second, at(1.3), at(1.011)) == (False, pytest.approx(0.71))


def test_a_late_tick_fires_once_and_is_back_in_step_with_no_burst() -> None:
    every_second = AlignedInterval(timedelta(seconds=1), 0.01)

    # Beat was busy from 09:00:00.012 to 09:00:03.7: one tick now, the next at 09:00:04.010, not three to catch up.
    assert due(every_second, at(3.7), at(0.012)) == (True, pytest.approx(0.31))
    assert due(every_second, at(3.75), at(3.7)) == (False, pytest.approx(0.26))


def test_longer_periods_align_to_their_own_multiples_and_offsets_wrap() -> None:
    every_two = AlignedInterval(timedelta(seconds=2), 1.01)
    # T0 is an even second: the instants are T0 + 1.01, T0 + 3.01, ...
    assert due(every_two, at(1.0), at(-0.99)) == (False, pytest.approx(0.01))
    assert due(every_two, at(1.02), at(-0.99)) == (True, pytest.approx(1.99))

    assert AlignedInterval(timedelta(seconds=1), 1.25).offset == pytest.approx(0.25)
    with pytest.raises(ValueError, match="positive period"):
        AlignedInterval(timedelta(0), 0.0)


@pytest.mark.django_db
def test_system_tasks_are_aligned_and_an_operators_tasks_are_not() -> None:
    system_tasks_install()
    entries = {model.task: EchoFlowEntry(model, app=app) for model in PeriodicTask.objects.all()}

    dispatch = entries[DISPATCH_TASK].schedule
    assert isinstance(dispatch, AlignedInterval)
    assert dispatch.offset == pytest.approx(DISPATCH_OFFSET)
    for spec in SYSTEM_TASKS:
        if spec.task != DISPATCH_TASK:
            schedule = entries[spec.task].schedule
            assert isinstance(schedule, AlignedInterval), spec.task
            # Half a second after a dispatch tick's instant: never at the moment a dispatch tick arrives.
            assert schedule.offset == pytest.approx(DISPATCH_OFFSET + 0.5)

    every_ten, _ = IntervalSchedule.objects.get_or_create(every=10, period=IntervalSchedule.SECONDS)
    mine = PeriodicTask.objects.create(name="mine", task="myapp.report", interval=every_ten)
    assert type(EchoFlowEntry(mine, app=app).schedule) is schedules.schedule
    # A system task an operator moved to a crontab keeps the crontab.
    crontab = CrontabSchedule.objects.create(minute="*/5")
    relay = PeriodicTask.objects.get(task="echoflow.system.relay_events")
    relay.interval, relay.crontab = None, crontab
    relay.save()
    assert isinstance(EchoFlowEntry(relay, app=app).schedule, schedules.crontab)


@pytest.mark.django_db(transaction=True)  # django-celery-beat commits and closes connections as beat does
def test_beat_sends_the_dispatch_tick_just_after_every_whole_second() -> None:
    """Beat's own loop (tick, then sleep for what tick returns), with time standing still between the calls.
    Beat restarts at 09:00:00.437 after being down an hour: the missed tick goes out at once, then in step."""
    system_tasks_install()
    PeriodicTask.objects.update(last_run_at=T0 - timedelta(hours=1))
    sent: list[tuple[str, float]] = []
    with time_machine.travel(at(0.437), tick=False) as clock:
        scheduler = EchoFlowScheduler(app=app)
        scheduler.__dict__["producer"] = None  # nothing is sent to a broker: apply_async is recorded instead

        def record(entry: Any, producer: Any = None, advance: bool = True, **kwargs: Any) -> None:
            sent.append((entry.task, (datetime.now(UTC) - T0).total_seconds()))

        scheduler.apply_async = record
        sleeps: list[float] = []
        while (datetime.now(UTC) - T0).total_seconds() < 6 and len(sleeps) < 1000:
            sleeps.append(scheduler.tick())
            if sleeps[-1] > 0:  # beat sleeps only when tick asks it to, and wakes a little late
                clock.shift(sleeps[-1] + 0.0005)
        scheduler._finalize()  # its last sync, now, while the test database exists (not at interpreter exit)

    dispatch_times = [t for task, t in sent if task == DISPATCH_TASK]
    assert dispatch_times[0] == pytest.approx(0.437, abs=0.001)
    assert dispatch_times[1:] == [pytest.approx(n + DISPATCH_OFFSET, abs=0.001) for n in range(1, 6)]
    relay_times = [t for task, t in sent if task == "echoflow.system.relay_events"]
    assert relay_times[1:] == [pytest.approx(t + DISPATCH_OFFSET + 0.5, abs=0.001) for t in (0, 2, 4)]
    # Beat sleeps until each instant rather than waking early and asking again in a loop.
    assert len(sleeps) < 40
