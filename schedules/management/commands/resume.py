"""`manage.py resume <id-or-name>`: make a paused schedule active again."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from schedules.management.commands.schedules import local_isoformat, schedule_from_ref
from schedules.models import ScheduleState
from schedules.services import schedule_resume


class Command(BaseCommand):
    help = "Resume a paused schedule; slots missed while it was paused follow its misfire policy."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("schedule", metavar="ID-OR-NAME", help="The schedule's id or name.")
        parser.add_argument("--org", metavar="SLUG", help="The organization, where a name could be ambiguous.")

    def handle(self, *args: Any, **options: Any) -> None:
        schedule = schedule_from_ref(options["schedule"], org_slug=options["org"])
        label = f"schedule {schedule.pk} {schedule.name!r}"
        if schedule_resume(schedule=schedule):
            if schedule.state == ScheduleState.COMPLETED:
                self.stdout.write(f"Resumed {label}; it has no future slot, so it is now completed.")
            else:
                next_run = local_isoformat(schedule.next_run_at, schedule.timezone)
                self.stdout.write(f"Resumed {label}; next run {next_run}.")
        elif schedule.state == ScheduleState.ACTIVE:
            self.stdout.write(f"{label[0].upper()}{label[1:]} was already active.")
        else:
            raise CommandError(f"{label} is {schedule.state}; only paused schedules can be resumed")
