"""Drop the single-column indexes of three foreign keys that composite indexes already serve.

runs_run(organization_id) and runs_run(schedule_id) are the leading columns of run_org_created_idx and
run_schedule_created_idx; runs_runattempt(run_id) leads attempt_unique_number_per_run. Each cost every insert and
every status change of a run (docs/benchmarks.md §4). Only the indexes are dropped: Django's AlterField would also
drop and re-add the foreign keys, which re-validates every row of the table under a lock.
"""

import django.db.models.deletion
from django.db import migrations, models

INDEXES = ("runs_run_organization_id_f8dd9ba6", "runs_run_schedule_id_6c827442", "runs_runattempt_run_id_158c4b4e")


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_apitoken"),
        ("runs", "0005_run_org_active_idx"),
        ("schedules", "0002_schedule_list_indexes"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    sql=[f'DROP INDEX IF EXISTS "{name}"' for name in INDEXES],
                    reverse_sql=[
                        'CREATE INDEX IF NOT EXISTS "runs_run_organization_id_f8dd9ba6" ON "runs_run" ("organization_id")',
                        'CREATE INDEX IF NOT EXISTS "runs_run_schedule_id_6c827442" ON "runs_run" ("schedule_id")',
                        'CREATE INDEX IF NOT EXISTS "runs_runattempt_run_id_158c4b4e" ON "runs_runattempt" ("run_id")',
                    ],
                )
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="run",
                    name="organization",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="runs",
                        to="accounts.organization",
                    ),
                ),
                migrations.AlterField(
                    model_name="run",
                    name="schedule",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="runs",
                        to="schedules.schedule",
                    ),
                ),
                migrations.AlterField(
                    model_name="runattempt",
                    name="run",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="attempt_log",
                        to="runs.run",
                    ),
                ),
            ],
        )
    ]
