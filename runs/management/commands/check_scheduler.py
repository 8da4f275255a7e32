"""`manage.py check_scheduler`: a liveness probe for the dispatcher (exit 0 healthy, 1 not)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from runs.selectors import dispatcher_heartbeat_age, dispatcher_is_healthy


def _health(max_age: float | None) -> tuple[bool, str]:
    if max_age is None:
        return dispatcher_is_healthy()
    # dispatcher_is_healthy() takes its limit from ECHOFLOW_HEARTBEAT_STALE only; same rule, another limit.
    age = dispatcher_heartbeat_age()
    if age is None:
        return False, "the dispatcher has never run"
    seconds = age.total_seconds()
    if seconds > max_age:
        return False, f"the dispatcher's last heartbeat was {seconds:.0f} s ago (limit {max_age:g} s)"
    return True, f"the dispatcher ticked {seconds:.1f} s ago"


def _parse_max_age(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise CommandError(f"max_age: {text!r} is not a positive number of seconds", returncode=2)
    return value


class Command(BaseCommand):
    help = (
        "Exit 0 and print the dispatcher's heartbeat age when it ticked recently enough, else print why "
        "not on stderr and exit 1. For container health checks and cron monitors."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--max-age",
            metavar="SECONDS",
            help="Oldest acceptable heartbeat (default: ECHOFLOW_HEARTBEAT_STALE).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        healthy, reason = _health(_parse_max_age(options["max_age"]))
        if not healthy:
            raise CommandError(reason, returncode=1)
        self.stdout.write(reason)
