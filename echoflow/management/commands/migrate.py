"""Django's ``migrate``, one at a time per database on PostgreSQL.

Deployments often run ``migrate`` as each replica starts (an init container, an entrypoint script). Django takes no
lock, so two of them can apply the same migration at once: one fails on "already exists" halfway through a
non-atomic migration, or drops the index the other is still building concurrently (echoflow/migration_ops.py; an
index being built concurrently looks INVALID until it is done). This command holds a PostgreSQL session advisory
lock for the whole run: a second ``migrate`` says it is waiting, waits, and then finds nothing left to do. The lock
belongs to the database connection, so it goes away with a ``migrate`` that is killed. SQLite (the embedded
default) is left as Django has it: a single machine's ``up`` runs it once, and SQLite serializes writers anyway.
"""

from __future__ import annotations

from typing import Any

from django.core.management.commands.migrate import Command as DjangoMigrateCommand
from django.db import connections

# pg_advisory_lock's key, the same in every EchoFlow process: "EchoFlow" in ASCII.
MIGRATE_LOCK_KEY = int.from_bytes(b"EchoFlow", "big")


class Command(DjangoMigrateCommand):
    help = DjangoMigrateCommand.help + " On PostgreSQL, one migrate at a time: a second one waits for the first."

    def handle(self, *args: Any, **options: Any) -> Any:
        connection = connections[options["database"]]
        if connection.vendor != "postgresql":
            return super().handle(*args, **options)
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [MIGRATE_LOCK_KEY])
            acquired = bool(cursor.fetchone()[0])
            if not acquired:
                self.stderr.write("Another migrate is running on this database; waiting for it to finish...")
                cursor.execute("SELECT pg_advisory_lock(%s)", [MIGRATE_LOCK_KEY])
        try:
            return super().handle(*args, **options)
        finally:
            if connection.connection is not None:  # still the session that holds the lock
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [MIGRATE_LOCK_KEY])
