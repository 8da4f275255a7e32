"""Indexes of the API's schedule list (docs/benchmarks.md, scenario 5): ordering by created or updated time, and on
PostgreSQL two GIN indexes, for text search (trigrams) and label filters (the embedded SQLite install scans; it
holds few schedules, and has no GIN)."""

from django.db import migrations, models

TEXT_INDEX = "schedule_text_trgm_idx"
LABELS_INDEX = "schedule_labels_gin_idx"


def create_gin_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    # pg_trgm is a trusted extension (PostgreSQL 13+): the database owner may create it.
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    # The expressions are those of the icontains lookup (UPPER(col::text) LIKE UPPER(%s)), one column each: the
    # three ORed conditions of ?q= become one BitmapOr over this index.
    schema_editor.execute(
        f"CREATE INDEX IF NOT EXISTS {TEXT_INDEX} ON schedules_schedule USING gin "
        "(UPPER(name::text) gin_trgm_ops, UPPER(description::text) gin_trgm_ops, UPPER(agent::text) gin_trgm_ops)"
    )
    # jsonb_ops (the default) answers both label filters: labels ? 'key' and labels @> '{"key": "value"}'.
    schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {LABELS_INDEX} ON schedules_schedule USING gin (labels)")


def drop_gin_indexes(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {TEXT_INDEX}")
        schema_editor.execute(f"DROP INDEX IF EXISTS {LABELS_INDEX}")


class Migration(migrations.Migration):

    dependencies = [
        ("schedules", "0001_initial"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="schedule",
            index=models.Index(fields=["organization", "created_at"], name="schedule_org_created_idx"),
        ),
        migrations.AddIndex(
            model_name="schedule",
            index=models.Index(fields=["organization", "updated_at"], name="schedule_org_updated_idx"),
        ),
        migrations.RunPython(create_gin_indexes, drop_gin_indexes, elidable=False),
    ]
