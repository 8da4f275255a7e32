"""Drop the single-column index of ``observability_webhookdelivery.subscription_id``: ``webhook_delivery_sub_idx``
(subscription, newest first) and the unique ``webhook_delivery_once_per_event`` (subscription, event) lead with the
same column and serve every lookup by subscription, a subscription's deletion included. The lone index was written on
each delivery's insert, on its claim and on its outcome (none of them HOT: ``next_attempt_at`` and ``status`` are in
``webhook_delivery_due_idx``), three entries per event sent to each subscription.

On PostgreSQL it goes with DROP INDEX CONCURRENTLY (``echoflow.migration_ops.DropIndexConcurrently``), which does not
block the deliveries being written and sent, and cannot run in a transaction: the migration is not atomic there.
"""

import django.db.models.deletion
from django.db import migrations, models

from echoflow.migration_ops import DropIndexConcurrently, atomic_unless_postgresql


class Migration(migrations.Migration):
    atomic = atomic_unless_postgresql()

    dependencies = [
        ("observability", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                DropIndexConcurrently(
                    model_name="webhookdelivery",
                    index=models.Index(fields=["subscription"], name="observability_webhookdelivery_subscription_id_e21be8fd"),
                )
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="webhookdelivery",
                    name="subscription",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="deliveries",
                        to="observability.webhooksubscription",
                    ),
                ),
            ],
        ),
    ]
