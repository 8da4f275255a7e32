"""The indexes of the tables every scheduled run writes, and of webhook deliveries (one per event and subscription):
each index costs every insert and every update that is not HOT, so none may be redundant, and every foreign key must
still lead one (an organization's, a schedule's or a subscription's deletion finds its rows through it)."""

from __future__ import annotations

import pytest
from django.db import connection

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

# The tables a scheduled run writes to (docs/benchmarks.md §2, "What a run writes now"), and where its events go.
RUN_PATH_TABLES = (
    "runs_run",
    "runs_runattempt",
    "schedules_schedule",
    "events_outboxevent",
    "observability_metricrollup",
    "observability_webhookdelivery",
)


def _indexes(table: str) -> list[tuple[str, list[str], bool, bool, str]]:
    """(name, columns in order, partial, unique, access method) of each index of ``table`` on plain columns."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT ic.relname,
                   array(SELECT a.attname FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
                         JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.n),
                   i.indpred IS NOT NULL, i.indisunique, am.amname
            FROM pg_index AS i
            JOIN pg_class AS ic ON ic.oid = i.indexrelid
            JOIN pg_am AS am ON am.oid = ic.relam
            WHERE i.indrelid = %s::regclass AND i.indexprs IS NULL
            """,
            [table],
        )
        return [(name, list(columns), partial, unique, method) for name, columns, partial, unique, method in cursor]


@pytest.mark.parametrize("table", RUN_PATH_TABLES)
def test_no_index_only_repeats_the_leading_columns_of_another(table: str) -> None:
    indexes = _indexes(table)
    redundant = [
        (name, other)
        for name, columns, partial, unique, method in indexes
        if not partial and not unique
        for other, other_columns, other_partial, _, other_method in indexes
        if other != name
        and not other_partial
        and other_method == method
        and len(other_columns) > len(columns)
        and other_columns[: len(columns)] == columns
    ]
    assert redundant == []


@pytest.mark.parametrize("table", RUN_PATH_TABLES)
def test_every_foreign_key_leads_an_index(table: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT a.attname FROM pg_constraint AS c "
            "JOIN pg_attribute AS a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] "
            "WHERE c.conrelid = %s::regclass AND c.contype = 'f'",
            [table],
        )
        keys = {column for (column,) in cursor}
    leading = {columns[0] for _, columns, partial, _, _ in _indexes(table) if not partial}
    assert keys - leading == set()
