"""A status condition that no index matches, for statements that find one row by its key.

Such a statement must read its row through the primary key. With the status as a plain column condition, the
planner may instead read a partial index whose predicate is that status (``run_resend_due_idx`` for queued runs,
``webhook_delivery_due_idx`` for pending deliveries, ...) when the statistics, gathered at a quiet moment, say the
index is nearly empty; in a burst each such statement then reads every row in that status, and the burst costs
O(N^2). Compared as ``status || ''``, the column matches no index and no partial index's predicate, so only the key
is left (runs/migrations/0010 and 0011 do the same inside the run path's SQL functions).
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import CharField, Func
from django.db.models.lookups import In


class Unindexed(Func):
    """``column || ''``: the column's value, as an expression that no index matches (PostgreSQL and SQLite)."""

    template = "(%(expressions)s || '')"
    output_field = CharField()


def unindexed_in(column: str, values: Iterable[str]) -> In:
    """``column IN values`` for ``filter()``, which lets only another condition (the key) choose the index."""
    return In(Unindexed(column), list(values))
