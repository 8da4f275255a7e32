"""``manage.py consume_events --group NAME``: print events of the stream as JSON lines, one consumer of a group.

Each envelope is written to stdout as one line of JSON (pipe it into ``jq`` or another program) and acknowledged
once written. Messages left pending by a consumer of the same group that died are reclaimed after
``--claim-idle`` seconds. SIGTERM or Ctrl-C stops it after the current message.
"""

from __future__ import annotations

import json
import signal
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from echoflow.events.consumer import ConsumerConfigError, EventConsumer, StreamEvent


class Command(BaseCommand):
    help = "Read the event stream with a consumer group: print each event as a JSON line, acknowledge it."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--group", required=True, help="Consumer group; every group receives every event once.")
        parser.add_argument(
            "--types",
            default="",
            help="Comma-separated event types to print (run.failed,alert.*); others are acknowledged silently.",
        )
        parser.add_argument("--consumer", default=None, help="This consumer's name in the group (default host-pid).")
        parser.add_argument(
            "--start",
            default="$",
            help='Where a new group starts: "$" only new events (default), "0" everything still in the stream.',
        )
        parser.add_argument(
            "--claim-idle",
            type=float,
            default=60.0,
            metavar="SECONDS",
            help="Reclaim messages another consumer left pending for this long (default 60).",
        )
        parser.add_argument("--block", type=int, default=5000, metavar="MS", help="Longest wait per read (ms).")
        parser.add_argument("--max-events", type=int, default=None, help="Stop after printing this many events.")
        parser.add_argument(
            "--exit-when-idle", action="store_true", help="Stop when nothing is left to read (for batch jobs)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["claim_idle"] <= 0:
            raise CommandError("--claim-idle: must be a positive number of seconds")
        if options["max_events"] is not None and options["max_events"] < 1:
            raise CommandError("--max-events: must be at least 1")
        types = [t.strip() for t in options["types"].split(",") if t.strip()]
        try:
            consumer = EventConsumer(
                group=options["group"],
                consumer=options["consumer"],
                types=types,
                start=options["start"],
                claim_idle_seconds=options["claim_idle"],
                block_ms=max(options["block"], 1),
            )
        except ConsumerConfigError as exc:
            raise CommandError(str(exc)) from None

        stopping = False

        def stop(signum: int, frame: FrameType | None) -> None:
            nonlocal stopping
            stopping = True

        try:
            previous: Any = signal.signal(signal.SIGTERM, stop)
        except ValueError:  # not the main thread (called from code): the caller stops it
            previous = None

        def write(event: StreamEvent) -> None:
            self.stdout.write(json.dumps(event.envelope, separators=(",", ":")))
            self.stdout.flush()

        try:
            consumer.run(
                write,
                should_stop=lambda: stopping,
                max_events=options["max_events"],
                exit_when_idle=options["exit_when_idle"],
            )
        except KeyboardInterrupt:
            pass
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
