"""`manage.py backfill`: runs for every past slot of a schedule in [--from, --to) that has none yet.

    manage.py backfill nightly-report --from 2026-10-01T00:00:00+02:00 --to 2026-10-08T00:00:00+02:00
    manage.py backfill 42 --from 2026-10-01T00:00Z --to 2026-10-02T00:00Z --dry-run

Slots that already have a run are left alone, so running it twice creates nothing twice. Any error is one line
on stderr naming the field, with exit status 2.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.dateparse import parse_datetime

from echoflow.audit.context import acting_as, command_actor
from runs.backfill import schedule_backfill
from schedules.management.commands.schedules import local_isoformat, schedule_from_ref

USAGE_ERROR = 2


def _instant(field: str, text: str) -> datetime:
    try:
        parsed = parse_datetime(text.strip())
    except ValueError:
        parsed = None
    if parsed is None:
        raise CommandError(
            f"{field}: {text!r} is not an ISO-8601 date-time (e.g. 2026-10-01T08:00:00+02:00)", returncode=USAGE_ERROR
        )
    if parsed.tzinfo is None:
        raise CommandError(
            f"{field}: {text!r} needs a UTC offset or time zone (e.g. 2026-10-01T08:00:00+02:00)",
            returncode=USAGE_ERROR,
        )
    return parsed


class Command(BaseCommand):
    help = (
        "Create backfill runs for every slot of a schedule in [--from, --to) that has no run yet "
        "(capped by ECHOFLOW_BACKFILL_CAP)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("schedule", metavar="ID-OR-NAME", help="The schedule's id or name.")
        parser.add_argument("--from", dest="start", required=True, metavar="ISO", help="First instant (included).")
        parser.add_argument("--to", dest="end", required=True, metavar="ISO", help="Last instant (excluded).")
        parser.add_argument("--org", metavar="SLUG", help="The organization, where names clash.")
        parser.add_argument("--dry-run", action="store_true", help="Count the slots; create nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        start = _instant("from", options["start"])
        end = _instant("to", options["end"])
        schedule = schedule_from_ref(options["schedule"], org_slug=options["org"], returncode=USAGE_ERROR)
        try:
            with acting_as(command_actor("backfill")):
                result = schedule_backfill(schedule=schedule, start=start, end=end, dry_run=options["dry_run"])
        except ValidationError as exc:
            message = "; ".join(f"{name}: {messages[0]}" for name, messages in exc.message_dict.items())
            raise CommandError(message, returncode=USAGE_ERROR) from None
        span = ""
        if result.first_slot is not None:
            span = (
                f" from {local_isoformat(result.first_slot, schedule.timezone)}"
                f" to {local_isoformat(result.last_slot, schedule.timezone)}"
            )
        if result.dry_run:
            self.stdout.write(
                f"dry run: {schedule.name}: {result.slots} slot(s){span}; "
                f"{result.slots - result.existing} would be created, {result.existing} already have a run"
            )
            return
        self.stdout.write(
            f"{schedule.name}: {result.slots} slot(s){span}; "
            f"created {result.created} backfill run(s), {result.existing} already had a run"
        )
