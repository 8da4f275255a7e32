"""`manage.py run_now <id-or-name>`: queue a run of a schedule now, outside its slots."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from runs.services import schedule_run_now
from schedules.management.commands.schedules import schedule_from_ref


class Command(BaseCommand):
    help = (
        "Queue a run of a schedule now. With --idempotency-key, repeating the command returns the run "
        "the key already queued instead of queuing another."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("schedule", metavar="ID-OR-NAME", help="The schedule's id or name.")
        parser.add_argument("--org", metavar="SLUG", help="The organization, where a name could be ambiguous.")
        parser.add_argument("--idempotency-key", metavar="KEY", help="Queue at most one run for this key.")

    def handle(self, *args: Any, **options: Any) -> None:
        schedule = schedule_from_ref(options["schedule"], org_slug=options["org"])
        key: str | None = options["idempotency_key"] or None
        run, created = schedule_run_now(schedule=schedule, idempotency_key=key)
        if created:
            self.stdout.write(f"Queued run {run.pk} of schedule {schedule.pk} {schedule.name!r}.")
        else:
            self.stdout.write(
                f"Run {run.pk} already exists for idempotency key {key!r} (status {run.status}); no new run was queued."
            )
