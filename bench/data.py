"""Fast data generation: PostgreSQL COPY of schedules and runs built from one template row."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from django.db import connection, models
from django.utils import timezone

from echoflow.accounts.models import Organization
from echoflow.accounts.services import organization_get_or_create
from schedules.models import Schedule


def bench_org() -> Organization:
    return organization_get_or_create(name="Bench", slug="bench")


def copy_rows(
    model: type[models.Model], template: models.Model, count: int, vary: Callable[[int], dict[str, Any]]
) -> None:
    """COPY ``count`` rows of ``model``: the template's values, with ``vary(i)`` overriding some fields."""
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(connection.ops.quote_name(f.column or f.attname) for f in fields)
    by_name = {f.attname: f for f in fields}
    # The template's values are prepared once; per row only the fields ``vary`` returns are (1M schedules in 46 s
    # on the benchmark machine instead of ~14 minutes).
    base = [f.get_db_prep_save(getattr(template, f.attname), connection) for f in fields]
    position = {f.attname: i for i, f in enumerate(fields)}
    table = connection.ops.quote_name(model._meta.db_table)
    with connection.cursor() as cursor, cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        for i in range(count):
            row = base.copy()
            for name, value in vary(i).items():
                row[position[name]] = by_name[name].get_db_prep_save(value, connection)
            copy.write_row(row)


def schedules_copy(
    *, org: Organization, count: int, next_run_at: Callable[[int], datetime | None], cron: Callable[[int], str]
) -> None:
    now = timezone.now()
    template = Schedule(
        organization=org,
        name="",
        trigger_kind="cron",
        cron="0 * * * *",
        timezone="UTC",
        action_kind="python",
        action_name="echoflow.noop",
        max_attempts=1,
        timeout_seconds=60,
        created_at=now,
        updated_at=now,
    )
    copy_rows(
        Schedule,
        template,
        count,
        # Each with an agent (50 of them), as schedules in use have: their runs copy it and so fill its index.
        lambda i: {
            "name": f"bench-{i:07d}",
            "agent": f"agent-{i % 50:02d}",
            "next_run_at": next_run_at(i),
            "cron": cron(i),
        },
    )


def truncate(tables: Iterable[str]) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
