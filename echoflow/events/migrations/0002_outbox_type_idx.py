"""The outbox's ``type`` keeps one index, renamed ``outbox_type_idx``; the LIKE-pattern twin that ``db_index=True``
adds on PostgreSQL goes (no query searches event types by prefix, and every event written updated it). The index
is renamed, not rebuilt, so the migration is quick on a large outbox."""

from django.db import migrations, models

OLD = "events_outboxevent_type_828dcf7e"  # Django's name for the db_index=True index of 0001
NEW = "outbox_type_idx"


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f'DROP INDEX IF EXISTS "{OLD}_like"')
        schema_editor.execute(f'ALTER INDEX IF EXISTS "{OLD}" RENAME TO "{NEW}"')
    else:  # SQLite renames no index: drop and build again (the embedded install's outbox is small)
        schema_editor.execute(f'DROP INDEX IF EXISTS "{OLD}"')
        schema_editor.execute(f'CREATE INDEX IF NOT EXISTS "{NEW}" ON "events_outboxevent" ("type")')


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f'ALTER INDEX IF EXISTS "{NEW}" RENAME TO "{OLD}"')
        schema_editor.execute(
            f'CREATE INDEX IF NOT EXISTS "{OLD}_like" ON "events_outboxevent" ("type" varchar_pattern_ops)'
        )
    else:
        schema_editor.execute(f'DROP INDEX IF EXISTS "{NEW}"')
        schema_editor.execute(f'CREATE INDEX IF NOT EXISTS "{OLD}" ON "events_outboxevent" ("type")')


class Migration(migrations.Migration):

    dependencies = [
        ("events", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="outboxevent",
                    name="type",
                    field=models.CharField(max_length=64),
                ),
                migrations.AddIndex(
                    model_name="outboxevent",
                    index=models.Index(fields=["type"], name=NEW),
                ),
            ],
            database_operations=[migrations.RunPython(forwards, backwards)],
        ),
    ]
