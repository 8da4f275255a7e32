"""Run.agent: the schedule's agent, copied onto each run when it is made, with an index for the run list's
``?agent=`` filter (docs/benchmarks.md, scenario 5). Before, the filter joined every candidate run to its schedule
and read the newest runs of the organization until 50 matched.

Existing runs get their schedule's agent as it is now (the best record there is of it); runs without a schedule, or
whose schedule has no agent, keep "". The copy is one UPDATE of the runs that have an agent, before the index is
built."""

from django.db import migrations, models


def copy_agents(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        sql = (
            "UPDATE runs_run AS r SET agent = s.agent FROM schedules_schedule AS s "
            "WHERE s.id = r.schedule_id AND s.agent <> ''"
        )
    else:  # SQLite (and any other): a correlated subquery, which every SQL database accepts
        sql = (
            "UPDATE runs_run SET agent = (SELECT s.agent FROM schedules_schedule AS s WHERE s.id = runs_run.schedule_id) "
            "WHERE schedule_id IN (SELECT id FROM schedules_schedule WHERE agent <> '')"
        )
    schema_editor.execute(sql)


class Migration(migrations.Migration):

    dependencies = [
        ("runs", "0008_run_claim_function"),
        ("schedules", "0003_schedule_org_agent_name_idx"),
    ]

    operations = [
        migrations.AddField(
            model_name="run",
            name="agent",
            field=models.CharField(blank=True, db_default="", default="", max_length=100),
        ),
        migrations.RunPython(copy_agents, migrations.RunPython.noop, elidable=True),
        migrations.AddIndex(
            model_name="run",
            index=models.Index(
                condition=models.Q(("agent", ""), _negated=True),
                fields=["organization", "agent", "-created_at"],
                name="run_org_agent_created_idx",
            ),
        ),
    ]
