"""The agent filter of the schedule list (docs/benchmarks.md, scenario 5): one index on (organization, agent, name)
instead of the two on agent alone (a plain and a LIKE-pattern one, which nothing queries). With it ``?agent=``, alone
or with ``state`` and ``trigger_kind``, reads that agent's schedules in the list's name order instead of walking
the organization's whole name index and filtering.

The index is built with CREATE INDEX CONCURRENTLY on PostgreSQL (echoflow/migration_ops.py), which cannot run in a
transaction: the migration is not atomic there. Dropping the two old indexes is quick, and a second run drops
nothing."""

from django.db import migrations, models

from echoflow.migration_ops import AddIndexConcurrently, atomic_unless_postgresql


class Migration(migrations.Migration):
    atomic = atomic_unless_postgresql()

    dependencies = [
        ("schedules", "0002_schedule_list_indexes"),
    ]

    operations = [
        migrations.AlterField(
            model_name="schedule",
            name="agent",
            field=models.CharField(blank=True, help_text="Name of the execution target.", max_length=100),
        ),
        AddIndexConcurrently(
            model_name="schedule",
            index=models.Index(fields=["organization", "agent", "name"], name="schedule_org_agent_name_idx"),
        ),
    ]
