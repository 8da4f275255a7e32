"""Next-fire computations per second, on one core: ``python -m bench.next_fire [--count N] [--repeat R]``.

Each case walks a chain of slots with ``Trigger.next_after`` (what the dispatcher, the preview and backfill call)
and also asks from scattered instants (a restarted dispatcher, a preview from "now"). The best of ``--repeat``
rounds is printed, as computations per second. Results and the machine are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "echoflow.settings")
os.environ.setdefault("DEBUG", "1")

from schedules.cron import next_after_cache_clear  # (these need the settings module name first)
from schedules.triggers import Trigger, TriggerKind

START = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Case:
    name: str
    trigger: Trigger

    @property
    def label(self) -> str:
        if self.trigger.kind == TriggerKind.INTERVAL:
            return f"every {self.trigger.interval_seconds} s"
        return f"{self.trigger.cron} ({self.trigger.timezone})"


CASES = [
    Case("cron wall-clock", Trigger(kind=TriggerKind.CRON, cron="30 8 * * 1-5", timezone="America/New_York")),
    Case("cron wall-clock", Trigger(kind=TriggerKind.CRON, cron="0 0 L * *", timezone="Europe/London")),
    Case("cron elapsed", Trigger(kind=TriggerKind.CRON, cron="*/5 * * * *", timezone="America/New_York")),
    Case("cron elapsed", Trigger(kind=TriggerKind.CRON, cron="*/5 * * * *", timezone="UTC")),
    Case("cron 6-field", Trigger(kind=TriggerKind.CRON, cron="*/10 * * * * *", timezone="Europe/London")),
    Case("interval", Trigger(kind=TriggerKind.INTERVAL, interval_seconds=60, start_at=START)),
]


def _chain(trigger: Trigger, count: int) -> Callable[[], None]:
    def run() -> None:
        slot: datetime | None = START
        for _ in range(count):
            assert slot is not None
            slot = trigger.next_after(slot)

    return run


def _scattered(trigger: Trigger, count: int) -> Callable[[], None]:
    rng = random.Random(42)
    instants = [
        START + timedelta(seconds=rng.randrange(366 * 86400), microseconds=rng.randrange(10**6)) for _ in range(count)
    ]

    def run() -> None:
        for instant in instants:
            trigger.next_after(instant)

    return run


def _rate(work: Callable[[], None], count: int, repeat: int) -> float:
    work()  # warm the caches (parsed expressions, zone transition tables), as in a running dispatcher
    best = min(_timed(work) for _ in range(repeat))
    return count / best


def _timed(work: Callable[[], None]) -> float:
    next_after_cache_clear()  # each round computes its slots, as a dispatcher meeting these instants first would
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="next-fire computations per round")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per case; the best is kept")
    options = parser.parse_args()
    print(f"# Python {platform.python_version()} on {platform.machine()}, one process (one core)")
    print(f"{'case':<16} {'trigger':<36} {'chain /s':>12} {'scattered /s':>14}")
    for case in CASES:
        chain = _rate(_chain(case.trigger, options.count), options.count, options.repeat)
        scattered = _rate(_scattered(case.trigger, options.count), options.count, options.repeat)
        print(f"{case.name:<16} {case.label:<36} {chain:>12,.0f} {scattered:>14,.0f}")


if __name__ == "__main__":
    main()
