"""Migration operations for tables that are big in production and written to all the time (``runs_run``).

A plain ``AddIndex`` runs ``CREATE INDEX`` in the migration's transaction: every insert and update of the table
waits for the whole build, so workers can neither claim nor finish runs. ``AddIndexConcurrently`` builds the index
with ``CREATE INDEX CONCURRENTLY`` on PostgreSQL, which lets writes go on, and is a plain ``AddIndex`` elsewhere
(the embedded SQLite database is small and has one writer anyway). A migration that uses it sets
``atomic = atomic_unless_postgresql()``: PostgreSQL refuses a concurrent build inside a transaction, and the
operation says so if it finds itself in one.

A non-atomic migration that fails halfway keeps what it did before the failure, and ``migrate`` runs it again from
the start; the operations here are written to be run again: ``AddIndexConcurrently`` replaces the INVALID index a
failed concurrent build leaves behind, and ``AddFieldIfMissing`` skips a column that is already there.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, cast

from django.contrib.postgres.operations import AddIndexConcurrently as PostgresAddIndexConcurrently
from django.db import DEFAULT_DB_ALIAS, OperationalError, connections
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations import AddField, AddIndex
from django.db.migrations.state import ProjectState

if TYPE_CHECKING:
    from django.db.backends.postgresql.schema import DatabaseSchemaEditor as PostgresSchemaEditor

logger = logging.getLogger(__name__)

# AddFieldIfMissing on PostgreSQL: how long one try waits for the table's lock, and how many tries it makes.
ADD_COLUMN_LOCK_TIMEOUT = "2s"
ADD_COLUMN_TRIES = 10
LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE for a lock_timeout that ran out


def atomic_unless_postgresql() -> bool:
    """The ``atomic`` of a migration that builds an index concurrently: False on PostgreSQL; True on SQLite, where
    the migration keeps its one transaction (SQLite alters or adds a NOT NULL column by copying the table into a new
    one, and that copy must not stop halfway). Read from the ``default`` database, EchoFlow's only one."""
    return connections[DEFAULT_DB_ALIAS].vendor != "postgresql"


def _index_is_valid(schema_editor: BaseDatabaseSchemaEditor, name: str) -> bool | None:
    """Whether PostgreSQL's index ``name`` is valid; None when there is none. A concurrent build that failed or was
    interrupted (a deadlock, a lock or statement timeout, a killed ``migrate``) leaves its index INVALID: present,
    maintained by every write, but never used by a query."""
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", [schema_editor.quote_name(name)]
        )
        row = cursor.fetchone()
    return None if row is None else bool(row[0])


class AddIndexConcurrently(PostgresAddIndexConcurrently):
    """``AddIndex`` that does not block writes on PostgreSQL and can be run again after a failure.

    Its migration state, description and deconstruction are ``AddIndex``'s, so the project state (and
    ``makemigrations --check``) is the same as with the ``AddIndex`` it replaces.
    """

    describe = AddIndex.describe

    def database_forwards(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, from_state: ProjectState, to_state: ProjectState
    ) -> None:
        model = to_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        if schema_editor.connection.vendor != "postgresql":
            schema_editor.add_index(model, self.index)
            return
        self._ensure_not_in_transaction(schema_editor)
        postgres = cast("PostgresSchemaEditor", schema_editor)
        # sqlmigrate (collect_sql) shows what a first run does, whatever the database it looks at already holds.
        if not schema_editor.collect_sql:
            valid = _index_is_valid(schema_editor, self.index.name)
            if valid:  # built by an earlier run whose migration was not recorded (or by hand): keep it
                return
            if valid is False:
                postgres.remove_index(model, self.index, concurrently=True)
        postgres.add_index(model, self.index, concurrently=True)

    def database_backwards(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, from_state: ProjectState, to_state: ProjectState
    ) -> None:
        model = from_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        if schema_editor.connection.vendor != "postgresql":
            schema_editor.remove_index(model, self.index)
            return
        self._ensure_not_in_transaction(schema_editor)
        cast("PostgresSchemaEditor", schema_editor).remove_index(model, self.index, concurrently=True)


class AddFieldIfMissing(AddField):
    """``AddField`` for a non-atomic migration: a run after a failure finds the column the first run committed and
    leaves it; on PostgreSQL it waits for the table's lock a bounded time and tries again (``_add_with_lock_timeout``).
    Its migration state is ``AddField``'s."""

    def database_forwards(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, from_state: ProjectState, to_state: ProjectState
    ) -> None:
        model: Any = to_state.apps.get_model(app_label, self.model_name)
        column = model._meta.get_field(self.name).column
        connection = schema_editor.connection
        if not schema_editor.collect_sql and self.allow_migrate_model(connection.alias, model):
            with connection.cursor() as cursor:
                columns = {c.name for c in connection.introspection.get_table_description(cursor, model._meta.db_table)}
            if column in columns:
                return
        if schema_editor.collect_sql or connection.vendor != "postgresql" or connection.in_atomic_block:
            super().database_forwards(app_label, schema_editor, from_state, to_state)
            return
        self._add_with_lock_timeout(app_label, schema_editor, from_state, to_state, model._meta.db_table, column)

    def _add_with_lock_timeout(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
        table: str,
        column: str,
    ) -> None:
        """``ALTER TABLE … ADD COLUMN`` waits for an ACCESS EXCLUSIVE lock, and while it waits every other statement on
        the table queues behind it: behind a long report query, workers could neither claim nor finish a run. Here it
        gives up after ``ADD_COLUMN_LOCK_TIMEOUT``, lets the queue drain, and tries again, up to ``ADD_COLUMN_TRIES``
        times; then ``migrate`` stops, saying so, with nothing changed."""
        connection = schema_editor.connection
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('lock_timeout')")
            before = cursor.fetchone()[0]
        try:
            for attempt in range(1, ADD_COLUMN_TRIES + 1):
                with connection.cursor() as cursor:
                    cursor.execute("SELECT set_config('lock_timeout', %s, false)", [ADD_COLUMN_LOCK_TIMEOUT])
                try:
                    super().database_forwards(app_label, schema_editor, from_state, to_state)
                    return
                except OperationalError as exc:
                    if getattr(exc.__cause__, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                        raise
                    if attempt == ADD_COLUMN_TRIES:
                        raise OperationalError(
                            f"could not lock {table} to add column {column} in {ADD_COLUMN_TRIES} tries of "
                            f"{ADD_COLUMN_LOCK_TIMEOUT} each: another transaction holds the table (find it in "
                            "pg_stat_activity); run migrate again once it has ended"
                        ) from exc
                    logger.warning(
                        "migrate: %s is busy; adding column %s again (try %d of %d)",
                        table, column, attempt + 1, ADD_COLUMN_TRIES,
                    )  # fmt: skip
                    _pause(min(0.1 * 2**attempt, 5.0))
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SELECT set_config('lock_timeout', %s, false)", [before])


def _pause(seconds: float) -> None:
    time.sleep(seconds)


class DropIndexConcurrently(AddIndexConcurrently):
    """``AddIndexConcurrently`` run backwards, for an index that the migration state does not list: Django's own
    index of a foreign key, which only repeats the leading column of another index and is declared away with
    ``db_index=False`` in the same migration's ``state_operations`` (``SeparateDatabaseAndState``; ``AlterField``
    would drop and re-add the foreign key, which re-validates every row under a lock).

    Forwards ``DROP INDEX CONCURRENTLY IF EXISTS`` on PostgreSQL, so a run again after an interruption drops nothing;
    backwards the index is built again as ``AddIndexConcurrently`` builds one, replacing what a failed build left.
    The migration state is left as it is."""

    def describe(self) -> str:
        return f"Drop index {self.index.name} on {self.model_name}"

    def state_forwards(self, app_label: str, state: ProjectState) -> None:
        pass

    def database_forwards(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, from_state: ProjectState, to_state: ProjectState
    ) -> None:
        super().database_backwards(app_label, schema_editor, to_state, from_state)

    def database_backwards(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, from_state: ProjectState, to_state: ProjectState
    ) -> None:
        super().database_forwards(app_label, schema_editor, to_state, from_state)
