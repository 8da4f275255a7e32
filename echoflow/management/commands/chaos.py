"""``manage.py chaos``: kill -9 beats, dispatchers and workers at random, take Redis and PostgreSQL away, then
prove from the database and the event stream that nothing was lost or duplicated. Exit status 1 on any
violation. See docs/reliability.md."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from echoflow.chaos.runner import ChaosConfig, run_chaos


class Command(BaseCommand):
    help = "Chaos test on PostgreSQL + Redis: random kills and outages, then exactly-once checks."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--schedules", type=int, default=300)
        parser.add_argument("--duration", type=float, default=180.0, help="Seconds of chaos.")
        parser.add_argument("--kill-every", type=float, default=5.0, help="Seconds between kills.")
        parser.add_argument("--outage", type=float, default=25.0, help="Seconds each of Redis and PostgreSQL is away.")
        parser.add_argument("--settle", type=float, default=120.0, help="Seconds to wait for quiescence.")
        parser.add_argument(
            "--worker-concurrency", type=int, default=2, help="Pool processes of each of the 2 executing workers."
        )
        parser.add_argument(
            "--pace",
            type=float,
            default=1.0,
            help="Multiplies every schedule's interval (e.g. 4: a quarter of the runs), to fit the machine.",
        )
        parser.add_argument("--seed", type=int, default=7)
        parser.add_argument("--keep", action="store_true", help="Keep the test's organization and runs afterwards.")
        parser.add_argument(
            "--redis-port", type=int, default=0, help="Port of the chaos test's private Redis (default: a free one)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        config = ChaosConfig(
            schedules=options["schedules"],
            duration=options["duration"],
            kill_every=options["kill_every"],
            outage=options["outage"],
            settle=options["settle"],
            worker_concurrency=options["worker_concurrency"],
            pace=options["pace"],
            seed=options["seed"],
            redis_port=options["redis_port"],
            keep=options["keep"],
        )
        try:
            figures = run_chaos(config, log=lambda line: self.stdout.write(line))
        except RuntimeError as exc:
            raise CommandError(str(exc), returncode=2) from None
        rows = [
            ("processes killed", figures.kills),
            ("quiescent after (s)", "no" if figures.settled_seconds is None else figures.settled_seconds),
            ("slots expected", figures.slots_expected),
            ("runs", figures.runs),
            ("duplicates", figures.duplicates),
            ("schedules lagging", figures.dispatch_lagging),
            ("missing (unexplained)", figures.missing),
            ("missed (policy-explained)", figures.explained_missed),
            ("stuck", figures.stuck),
            ("attempts unaccounted", figures.attempts_unaccounted),
            ("events missing", figures.events_missing),
            ("events duplicated", figures.events_duplicated),
            ("final events wrong", figures.final_events_wrong),
        ]
        for label, value in rows:
            self.stdout.write(f"{label:<28}{value:>10}")
        for note in figures.notes[:20]:
            self.stdout.write(f"  {note}")
        if figures.violations:
            raise CommandError(f"{figures.violations} violation(s)", returncode=1)
        self.stdout.write(self.style.SUCCESS("no violations"))
