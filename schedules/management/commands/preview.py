"""`manage.py preview`: the next fire instants of a trigger, computed by the dispatcher's own arithmetic.

    manage.py preview --cron "30 2 * * *" --tz Europe/Riga --after 2026-03-28T00:00:00+00:00 --count 5
    manage.py preview --interval 900 --start 2026-10-01T08:00:00+02:00
    manage.py preview --at 2026-10-01T08:00:00+02:00
    manage.py preview --schedule nightly-report --org acme --json

One ISO-8601 instant per line, with its UTC offset, in the trigger's zone. Invalid input is one line on stderr
naming the field, and exit status 2 (as for any usage error).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from schedules.cron import CronError
from schedules.management.commands.schedules import schedule_from_ref
from schedules.selectors import schedule_preview
from schedules.triggers import Trigger, TriggerKind, trigger_validate, zone_get

MAX_COUNT = 1000
USAGE_ERROR = 2


def _invalid(message: str) -> CommandError:
    return CommandError(message, returncode=USAGE_ERROR)


def _first_line(exc: ValidationError) -> str:
    return "; ".join(f"{field}: {messages[0]}" for field, messages in exc.message_dict.items())


def _parse_instant(field: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        parsed = parse_datetime(text.strip())
    except ValueError:
        parsed = None
    if parsed is None:
        raise _invalid(f"{field}: {text!r} is not an ISO-8601 date-time (e.g. 2026-10-01T08:00:00+02:00)")
    if parsed.tzinfo is None:
        raise _invalid(f"{field}: {text!r} needs a UTC offset or time zone (e.g. 2026-10-01T08:00:00+02:00)")
    return parsed


def _parse_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_COUNT:
        raise _invalid(f"count: {text!r} is not a whole number between 1 and {MAX_COUNT}")
    return count


def _parse_interval(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise _invalid(f"interval_seconds: {text!r} is not a whole number of seconds") from None


class Command(BaseCommand):
    help = (
        "Print the next fire instants of a cron, interval or once trigger, or of a saved schedule, strictly "
        "after --after (default: now), one ISO-8601 instant per line in the trigger's time zone."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        kind = parser.add_argument_group("trigger (exactly one)")
        kind.add_argument("--cron", metavar="EXPR", help='A cron expression, e.g. "30 2 * * *" or @daily.')
        kind.add_argument("--interval", metavar="SECONDS", help="Every N seconds, anchored at --start.")
        kind.add_argument("--at", metavar="ISO", help="Once, at this instant.")
        kind.add_argument("--schedule", metavar="ID-OR-NAME", help="A saved schedule's trigger.")
        parser.add_argument("--tz", metavar="ZONE", help="IANA time zone of --cron/--interval/--at (default UTC).")
        parser.add_argument("--start", metavar="ISO", help="No slot before this; the anchor of an --interval.")
        parser.add_argument("--end", metavar="ISO", help="No slot after this.")
        parser.add_argument("--org", metavar="SLUG", help="The organization of --schedule, where names clash.")
        parser.add_argument("--after", metavar="ISO", help="List slots strictly after this (default: now).")
        parser.add_argument("--count", default="5", help=f"How many slots, 1-{MAX_COUNT} (default 5).")
        parser.add_argument("--json", action="store_true", help="Print a JSON list of the same strings.")

    def handle(self, *args: Any, **options: Any) -> None:
        count = _parse_count(options["count"])
        after = _parse_instant("after", options["after"]) or timezone.now()
        trigger = self._trigger(options, after=after)
        try:
            zone = zone_get(trigger.timezone)
            slots = schedule_preview(trigger=trigger, count=count, after=after)
        except ValidationError as exc:  # a saved schedule whose zone no longer exists
            raise _invalid(f"schedule: {_first_line(exc)}") from None
        except CronError as exc:  # a saved schedule whose expression no longer parses
            raise _invalid(f"schedule: cron: {exc}") from None
        lines = [_local(slot, zone) for slot in slots]
        if options["json"]:
            self.stdout.write(json.dumps(lines))
            return
        for line in lines:
            self.stdout.write(line)
        if not lines:
            self.stderr.write(f"no fire instant after {_local(after, zone)}")

    def _trigger(self, options: dict[str, Any], *, after: datetime) -> Trigger:
        given = [name for name in ("cron", "interval", "at", "schedule") if options[name] is not None]
        if len(given) != 1:
            which = f"got {', '.join('--' + name for name in given)}" if given else "got none"
            raise _invalid(f"trigger: give exactly one of --cron, --interval, --at or --schedule ({which})")
        if options["schedule"] is not None:
            for option in ("tz", "start", "end"):
                if options[option] is not None:
                    raise _invalid(f"{option}: --{option} cannot be combined with --schedule (it has one)")
            schedule = schedule_from_ref(options["schedule"], org_slug=options["org"], returncode=USAGE_ERROR)
            return schedule.trigger
        kind = {"cron": TriggerKind.CRON, "interval": TriggerKind.INTERVAL, "at": TriggerKind.ONCE}[given[0]]
        try:
            return trigger_validate(
                kind=kind,
                timezone=options["tz"] if options["tz"] is not None else "UTC",
                cron=options["cron"] or "",
                interval_seconds=_parse_interval(options["interval"]),
                run_at=_parse_instant("run_at", options["at"]),
                start_at=_parse_instant("start_at", options["start"]),
                end_at=_parse_instant("end_at", options["end"]),
                # Without --start an interval counts from --after, to the second, as a new schedule counts
                # from its creation.
                anchor=after.replace(microsecond=0),
            )
        except ValidationError as exc:
            raise _invalid(_first_line(exc)) from None


def _local(instant: datetime, zone: ZoneInfo) -> str:
    return instant.astimezone(zone).isoformat()
