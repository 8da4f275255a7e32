"""Drop the single-column index of ``schedules_schedule.organization_id``: ``schedule_name_unique_in_org``
(organization, name) leads with the same column and serves every lookup by organization (the API's lists, the
cascade of an organization's deletion), as do the other indexes that lead with it. The lone index was written on
every schedule update that is not HOT, which is each of the dispatcher's (``next_run_at`` is indexed): 1.2 of the
98.5 WAL records a scheduled run cost (docs/benchmarks.md §2). ``runs.0006`` did the same for ``runs_run``.

On PostgreSQL the index goes with DROP INDEX CONCURRENTLY (``echoflow.migration_ops.DropIndexConcurrently``), which
does not block the dispatcher's writes and cannot run in a transaction: the migration is not atomic there.
"""

import django.db.models.deletion
from django.db import migrations, models

from echoflow.migration_ops import DropIndexConcurrently, atomic_unless_postgresql


class Migration(migrations.Migration):
    atomic = atomic_unless_postgresql()

    dependencies = [
        ("accounts", "0002_apitoken"),
        ("schedules", "0003_schedule_org_agent_name_idx"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                DropIndexConcurrently(
                    model_name="schedule",
                    index=models.Index(fields=["organization"], name="schedules_schedule_organization_id_8bb21e99"),
                )
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="schedule",
                    name="organization",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="schedules",
                        to="accounts.organization",
                    ),
                ),
            ],
        ),
    ]
