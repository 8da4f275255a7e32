"""The beat scheduler: django-celery-beat's DatabaseScheduler, with EchoFlow's system tasks installed first and
their intervals kept in step with the clock.

A stock interval entry fires one period after it last fired, so its phase is wherever beat happened to start and
slips by each tick's own delay: a 1-second dispatch tick lands anywhere in the second. A slot at 09:00:00 was then
claimed by the first tick after it, 0 to 1 s later (0.97 s in one benchmark run, docs/benchmarks.md §2), before
any worker could start it. Here the system tasks' interval entries fire at whole multiples of their period since
the Unix epoch plus a fixed offset: the dispatch tick ``DISPATCH_OFFSET`` after each whole second (a little later
than the slot, so that a worker whose clock is a few milliseconds behind beat's still sees the slot as due), the
other system tasks half a second after that (so that they do not take the system worker at the instant a dispatch
tick arrives). Beat sleeps until the next aligned instant; a tick that comes late (beat busy, clock stepped) fires once
and the entry is back in step at the next instant, with no catch-up burst. Periodic tasks that operators add keep
django-celery-beat's behaviour.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from celery import schedules
from django_celery_beat.schedulers import DatabaseScheduler, ModelEntry

DISPATCH_TASK = "echoflow.system.dispatch"
DISPATCH_OFFSET = 0.01


class AlignedInterval(schedules.schedule):
    """An interval due at every whole multiple of its period since the Unix epoch, plus ``offset`` seconds."""

    def __init__(self, run_every: timedelta, offset: float, nowfun: Any = None, app: Any = None) -> None:
        super().__init__(run_every, nowfun=nowfun, app=app)
        period = self.seconds
        if period <= 0:
            raise ValueError(f"an aligned interval needs a positive period, not {run_every!r}")
        self.offset = offset % period

    def last_instant(self, now: datetime) -> float:
        """The latest aligned instant at or before ``now``, as a Unix timestamp."""
        period = self.seconds
        return math.floor((now.timestamp() - self.offset) / period) * period + self.offset

    def is_due(self, last_run_at: datetime) -> schedules.schedstate:
        now = self.maybe_make_aware(self.now())
        current = self.last_instant(now)
        wait = current + self.seconds - now.timestamp()
        # Due when it has not fired since the latest aligned instant; either way, next look at the next instant.
        return schedules.schedstate(self.maybe_make_aware(last_run_at).timestamp() < current, wait)

    def __repr__(self) -> str:
        return f"<aligned: every {self.human_seconds} at +{self.offset:g} s>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AlignedInterval):
            return self.seconds == other.seconds and self.offset == other.offset
        return False

    def __hash__(self) -> int:
        return hash((self.seconds, self.offset))

    def __reduce__(self) -> Any:
        plain: Any = self  # celery-types does not declare run_every and nowfun
        return self.__class__, (plain.run_every, self.offset, plain.nowfun)


def system_task_offset(task: str) -> float | None:
    """Seconds after each whole period at which an EchoFlow system task fires; None for other tasks."""
    from echoflow.system_tasks import SYSTEM_TASKS

    if task == DISPATCH_TASK:
        return DISPATCH_OFFSET
    if any(spec.task == task for spec in SYSTEM_TASKS):
        return DISPATCH_OFFSET + 0.5
    return None


class EchoFlowEntry(ModelEntry):
    def __init__(self, model: Any, app: Any = None) -> None:
        super().__init__(model, app=app)
        schedule = vars(self)["schedule"]
        # Only plain intervals (IntervalSchedule); a crontab or clocked schedule is already tied to the clock.
        if type(schedule) is schedules.schedule:
            plain: Any = schedule  # celery-types does not declare run_every and nowfun
            offset = system_task_offset(model.task)
            if offset is not None and plain.seconds > 0:
                self.schedule = AlignedInterval(plain.run_every, offset, nowfun=plain.nowfun, app=self.app)


class EchoFlowScheduler(DatabaseScheduler):
    Entry = EchoFlowEntry
    # Re-read the PeriodicTask table often enough that the 1-second dispatch entry keeps its pace.
    max_interval = 1

    def adjust(self, n: Any, drift: float = 0.0) -> Any:
        # Celery wakes beat 10 ms before an entry is due (drift=-0.010) and then calls tick() in a loop, without
        # sleeping, until it is: each call a query of the PeriodicTask table here. Beat sleeps until the instant
        # instead; the dispatch tick's offset, not an early wake, is what keeps it clear of the slot it serves.
        return n + drift if n and n > 0 else n

    def setup_schedule(self) -> None:
        from echoflow.system_tasks import system_tasks_install

        system_tasks_install()
        super().setup_schedule()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
