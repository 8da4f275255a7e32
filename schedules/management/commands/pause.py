"""`manage.py pause <id-or-name>`: stop an active schedule's slots until it is resumed."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from schedules.management.commands.schedules import schedule_from_ref
from schedules.models import ScheduleState
from schedules.services import schedule_pause


class Command(BaseCommand):
    help = "Pause an active schedule; slots missed while paused follow its misfire policy when it is resumed."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("schedule", metavar="ID-OR-NAME", help="The schedule's id or name.")
        parser.add_argument("--note", default="", help="Why it is paused (shown next to its state).")
        parser.add_argument("--org", metavar="SLUG", help="The organization, where a name could be ambiguous.")

    def handle(self, *args: Any, **options: Any) -> None:
        schedule = schedule_from_ref(options["schedule"], org_slug=options["org"])
        label = f"schedule {schedule.pk} {schedule.name!r}"
        if schedule_pause(schedule=schedule, note=options["note"]):
            self.stdout.write(f"Paused {label}.")
        elif schedule.state == ScheduleState.PAUSED:
            # Pausing twice is what the operator wanted anyway; the first note is kept.
            self.stdout.write(f"{label[0].upper()}{label[1:]} was already paused.")
        else:
            raise CommandError(f"{label} is {schedule.state}; only active schedules can be paused")
