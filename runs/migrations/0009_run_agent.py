"""Run.agent: the schedule's agent, copied onto each run when it is made, with an index for the run list's
``?agent=`` filter (docs/benchmarks.md, scenario 5). Before, the filter joined every candidate run to its schedule
and read the newest runs of the organization until 50 matched.

Existing runs get their schedule's agent as it is now (the best record there is of it); runs without a schedule, or
whose schedule has no agent, keep "". The copy runs before the index is built, so it does not update the index too.

On PostgreSQL the migration is not atomic, so that workers keep claiming and finishing runs while it runs: the
column is added in one short statement, the copy goes by ranges of ``BATCH_SIZE`` run ids, one autocommitted UPDATE
each (so no more than a batch of runs is ever locked, and only for that statement), and the index is built
concurrently (echoflow/migration_ops.py). Run again after a failure, it keeps the column, copies only the runs not
copied yet and rebuilds the index. On SQLite it is one transaction and the copy one UPDATE."""

from django.db import migrations, models

from echoflow.migration_ops import AddFieldIfMissing, AddIndexConcurrently, atomic_unless_postgresql

BATCH_SIZE = 5_000

# Runs already holding their schedule's agent are skipped: a second run after a failure rewrites nothing.
POSTGRESQL_BATCH = (
    "UPDATE runs_run AS r SET agent = s.agent FROM schedules_schedule AS s "
    "WHERE s.id = r.schedule_id AND s.agent <> '' AND r.agent <> s.agent AND r.id >= %s AND r.id < %s"
)
# A correlated subquery, which every SQL database accepts.
OTHER_DATABASES = (
    "UPDATE runs_run SET agent = (SELECT s.agent FROM schedules_schedule AS s WHERE s.id = runs_run.schedule_id) "
    "WHERE schedule_id IN (SELECT id FROM schedules_schedule WHERE agent <> '')"
)


def copy_agents(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        schema_editor.execute(OTHER_DATABASES)
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT min(id), max(id) FROM runs_run")  # both ends of the primary key: no scan
        first, last = cursor.fetchone()
    if first is None:
        return
    for start in range(first, last + 1, BATCH_SIZE):
        schema_editor.execute(POSTGRESQL_BATCH, (start, start + BATCH_SIZE))


class Migration(migrations.Migration):
    atomic = atomic_unless_postgresql()

    dependencies = [
        ("runs", "0008_run_claim_function"),
        ("schedules", "0003_schedule_org_agent_name_idx"),
    ]

    operations = [
        AddFieldIfMissing(
            model_name="run",
            name="agent",
            field=models.CharField(blank=True, db_default="", default="", max_length=100),
        ),
        migrations.RunPython(copy_agents, migrations.RunPython.noop, elidable=True),
        AddIndexConcurrently(
            model_name="run",
            index=models.Index(
                condition=models.Q(("agent", ""), _negated=True),
                fields=["organization", "agent", "-created_at"],
                name="run_org_agent_created_idx",
            ),
        ),
    ]
