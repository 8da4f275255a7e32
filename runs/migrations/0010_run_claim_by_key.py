"""``echoflow_run_claim``: the UPDATE that starts the run finds it by its primary key alone.

In 0008 its WHERE also said ``r.status = 'queued'``. That is redundant (statement 1 locked the row and the function
goes on only if it was queued; no one else can change a locked row), and it let the planner match the partial index
``run_resend_due_idx`` (``WHERE status = 'queued'``). With statistics from a quiet moment, when few runs were queued,
the planner took that index for a one-row scan and filtered on the id: each claim of a burst read every run still
queued. ``bench lag`` caught it (auto_explain: 2,733 of 3,132 claims read about 570 queued runs each, 1.57 million
rows for 3,000 runs; docs/benchmarks.md §2). Without the status in the WHERE, only the primary key matches.

The rest of the function is 0008's, unchanged; reversing restores 0008's text.
"""

import importlib

from django.db import migrations

previous = importlib.import_module("runs.migrations.0008_run_claim_function")

BY_STATUS = "WHERE r.id = p_run_id AND o.id = r.organization_id AND r.status = 'queued'"
BY_KEY = (
    "-- By its key alone: statement 1 locked it and saw it queued (a status condition here would let the planner\n"
    "            -- read it through the partial index of queued runs, every queued run with it).\n"
    "            WHERE r.id = p_run_id AND o.id = r.organization_id"
)
if previous.CREATE.count(BY_STATUS) != 1:
    raise RuntimeError("runs.0010: 0008's claim function no longer has the condition this migration replaces")
CREATE = previous.CREATE.replace(BY_STATUS, BY_KEY)


def _create(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def _restore(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(previous.CREATE)


class Migration(migrations.Migration):
    dependencies = [("runs", "0009_run_agent")]

    operations = [migrations.RunPython(_create, _restore)]
