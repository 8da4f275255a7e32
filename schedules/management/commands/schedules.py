"""`manage.py schedules`: the schedules as a table (or JSON), optionally of one organization and one state.

The lookups at the top are shared with the other schedule commands (pause, resume, run_now, preview), so every
command answers a wrong slug, id or name with the same readable line.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.core.management.base import BaseCommand, CommandError, CommandParser

from echoflow.accounts.models import Organization
from schedules.models import Schedule, ScheduleState
from schedules.selectors import schedule_find, schedule_list

COLUMNS = ("id", "org", "name", "trigger", "state", "next run", "last status")


def organization_from_slug(slug: str | None, *, returncode: int = 1) -> Organization | None:
    """The organization named by ``--org``, or None when the option was not given."""
    if slug is None:
        return None
    organization = Organization.objects.filter(slug=slug).first()
    if organization is None:
        raise CommandError(f"org: no organization with the slug {slug!r}", returncode=returncode)
    return organization


def schedule_from_ref(ref: str, *, org_slug: str | None, returncode: int = 1) -> Schedule:
    """A schedule by id or name, as typed on the command line; a miss is one readable CommandError."""
    organization = organization_from_slug(org_slug, returncode=returncode)
    try:
        return schedule_find(ref=ref.strip(), organization=organization)
    except Schedule.DoesNotExist as exc:
        where = f" in organization {org_slug!r}" if org_slug else ""
        if ref.strip().isdigit():
            message = f"no schedule with id {ref.strip()}{where}"
        elif "several organizations" in str(exc):
            message = f"{exc}; pass --org SLUG"
        else:
            message = f"{exc}{where}"
        raise CommandError(f"schedule: {message}", returncode=returncode) from None


def local_isoformat(instant: datetime | None, zone_name: str) -> str | None:
    """An instant as ISO-8601 in the schedule's zone (UTC if the stored zone is unusable)."""
    if instant is None:
        return None
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    return instant.astimezone(zone).isoformat()


def _describe(schedule: Schedule) -> str:
    try:
        return schedule.trigger.describe()
    except (ZoneInfoNotFoundError, ValueError, AssertionError):
        # A row that no longer validates (edited in the database by hand) is listed, not fatal.
        return f"{schedule.trigger_kind} (invalid: {schedule.cron or schedule.timezone})"


def _row(schedule: Schedule) -> dict[str, Any]:
    return {
        "id": schedule.pk,
        "org": schedule.organization.slug,
        "name": schedule.name,
        "trigger": _describe(schedule),
        "state": schedule.state,
        "next_run_at": local_isoformat(schedule.next_run_at, schedule.timezone),
        "last_run_status": schedule.last_run_status or None,
    }


def render_table(rows: list[dict[str, Any]]) -> list[str]:
    cells = [
        [
            str(row["id"]),
            row["org"],
            row["name"],
            row["trigger"],
            row["state"],
            row["next_run_at"] or "-",
            row["last_run_status"] or "-",
        ]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [list(COLUMNS), *cells]) for i in range(len(COLUMNS))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [list(COLUMNS), *cells]
    ]


class Command(BaseCommand):
    help = "List schedules: id, organization, name, trigger, state, next run (in the schedule's zone), last status."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", metavar="SLUG", help="Only this organization's schedules.")
        parser.add_argument("--state", help=f"Only schedules in this state ({', '.join(ScheduleState.values)}).")
        parser.add_argument("--json", action="store_true", help="Print a JSON list instead of a table.")

    def handle(self, *args: Any, **options: Any) -> None:
        organization = organization_from_slug(options["org"])
        state: str | None = options["state"]
        if state is not None and state not in ScheduleState.values:
            raise CommandError(f"state: {state!r} is not one of {', '.join(ScheduleState.values)}")
        query = schedule_list(organization=organization)
        if state is not None:
            query = query.filter(state=state)
        rows = [_row(schedule) for schedule in query]
        if options["json"]:
            self.stdout.write(json.dumps(rows, indent=2))
        elif not rows:
            self.stdout.write("No schedules.")
        else:
            for line in render_table(rows):
                self.stdout.write(line)
