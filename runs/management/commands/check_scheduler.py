"""`manage.py check_scheduler`: a liveness probe for the dispatcher (exit 0 healthy, 1 not).

The same checks as ``/healthz`` (echoflow.observability.health): database, broker, dispatcher heartbeat.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from echoflow.observability.health import health_check
from echoflow.observability.services import dispatcher_alert_check

logger = logging.getLogger(__name__)


def _health(max_age: float | None) -> tuple[bool, str]:
    report = health_check(max_heartbeat_age=max_age)
    if report.checks.get("database") == "ok":
        # Beat's container runs this probe even when beat itself hangs: a chance to raise the stalled alert.
        try:
            dispatcher_alert_check()
        except Exception as exc:  # the probe answers about health; the alert is best effort here
            logger.warning("check_scheduler: the dispatcher alert check failed: %s", exc)
    if not report.healthy:
        return False, "; ".join(report.problems)
    return True, str(report.checks["dispatcher"]["detail"])


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
