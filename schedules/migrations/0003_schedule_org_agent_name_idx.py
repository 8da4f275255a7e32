"""The agent filter of the schedule list (docs/benchmarks.md, scenario 5): one index on (organization, agent, name)
instead of the two on agent alone (a plain and a LIKE-pattern one, which nothing queries). With it ``?agent=``, alone
or with ``state`` and ``trigger_kind``, reads that agent's schedules in the list's name order instead of walking
the organization's whole name index and filtering."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("schedules", "0002_schedule_list_indexes"),
    ]

    operations = [
        migrations.AlterField(
            model_name="schedule",
            name="agent",
            field=models.CharField(blank=True, help_text="Name of the execution target.", max_length=100),
        ),
        migrations.AddIndex(
            model_name="schedule",
            index=models.Index(fields=["organization", "agent", "name"], name="schedule_org_agent_name_idx"),
        ),
    ]
