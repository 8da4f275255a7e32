"""``manage.py bench SCENARIO [--smoke]``: the benchmarks of docs/benchmarks.md (see bench/cli.py).

Runs in a PostgreSQL database and a redis-server created for the run and removed at its end; the project's own
database is not touched (only its server is used, unless --postgres names another).
"""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Benchmarks against django-celery-beat and bare Celery; prints Markdown tables."

    def add_arguments(self, parser: CommandParser) -> None:
        from bench.cli import add_arguments

        add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        from bench.cli import run

        if run(argparse.Namespace(**options)):
            raise CommandError("a benchmark scenario failed (see above)")
