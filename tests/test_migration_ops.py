"""echoflow/migration_ops.py: the index migrations build without blocking writes on PostgreSQL, can be run again
after a failed build, leave the schema and the migration state AddIndex left, and stay plain on SQLite.

The tests here migrate the test database back and forth; ``latest_schema`` puts it back at the end of each."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from io import StringIO
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
import pytest
from django.core.management import call_command
from django.db import NotSupportedError, OperationalError, connection
from django.db.migrations import AddField, AddIndex
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.operations.base import Operation
from django.db.migrations.recorder import MigrationRecorder

from echoflow import migration_ops
from echoflow.migration_ops import AddFieldIfMissing, AddIndexConcurrently
from tests.conftest import embedded_child

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


# (app, migration, index) of every migration that builds an index with AddIndexConcurrently.
INDEX_MIGRATIONS = [
    ("runs", "0005_run_org_active_idx", "run_org_active_idx"),
    ("runs", "0007_run_schedule_active_idx", "run_schedule_active_idx"),
    ("runs", "0009_run_agent", "run_org_agent_created_idx"),
    ("schedules", "0003_schedule_org_agent_name_idx", "schedule_org_agent_name_idx"),
]


class IndexState(NamedTuple):
    oid: int
    valid: bool
    definition: str


class Statement(NamedTuple):
    sql: str
    in_transaction: bool
    rows: int


def index_state(name: str) -> IndexState | None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexrelid::int, indisvalid, pg_get_indexdef(indexrelid) FROM pg_index "
            "WHERE indexrelid = to_regclass(%s)",
            [f'"{name}"'],
        )
        row = cursor.fetchone()
    return None if row is None else IndexState(*row)


def migrate(app: str, target: str) -> None:
    call_command("migrate", app, target, verbosity=0)


def applied(app: str, name: str) -> bool:
    return MigrationRecorder.Migration.objects.filter(app=app, name=name).exists()


@contextmanager
def recorded_statements() -> Iterator[list[Statement]]:
    """Every statement the test connection runs, whether it ran inside a transaction, and the rows it changed."""
    statements: list[Statement] = []

    def record(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
        in_transaction = not connection.get_autocommit() or connection.in_atomic_block
        result = execute(sql, params, many, context)
        statements.append(Statement(sql, in_transaction, context["cursor"].rowcount))
        return result

    with connection.execute_wrapper(record):
        yield statements


@contextmanager
def long_transaction_elsewhere() -> Iterator[None]:
    """Another session in a REPEATABLE READ transaction that holds its snapshot (a long report, a worker between two
    statements), while this connection gives up on a lock after 300 ms. A concurrent index build waits for such a
    transaction to end before it marks the index valid: here it gives up first and leaves an INVALID index, as a
    build cut short by a lock or statement timeout, a deadlock or a killed ``migrate`` does."""
    db = connection.settings_dict
    other = psycopg.connect(
        host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"], dbname=db["NAME"], autocommit=True
    )
    try:
        other.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        other.execute("SELECT count(*) FROM django_migrations")  # takes the snapshot
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '300ms'")
        yield
    finally:
        other.close()
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")


@pytest.fixture
def latest_schema(transactional_db: None) -> Iterator[None]:
    """Bring every app back to its last migration after the test (before the database is flushed)."""
    yield
    call_command("migrate", verbosity=0)


@pytest.mark.parametrize(("app", "name", "index"), INDEX_MIGRATIONS)
def test_each_index_migration_builds_concurrently_outside_a_transaction(app: str, name: str, index: str) -> None:
    out = StringIO()
    call_command("sqlmigrate", app, name, stdout=out)
    sql = out.getvalue()
    assert f'CREATE INDEX CONCURRENTLY "{index}"' in sql
    assert "BEGIN;" not in sql  # atomic = False: PostgreSQL refuses CONCURRENTLY in a transaction


def test_migrating_runs_create_index_concurrently_and_drop_index_concurrently(latest_schema: None) -> None:
    name = "run_schedule_active_idx"
    with recorded_statements() as backward:
        migrate("runs", "0006_drop_redundant_fk_indexes")
    assert index_state(name) is None
    with recorded_statements() as forward:
        migrate("runs", "0007_run_schedule_active_idx")

    drops = [(s.sql, s.in_transaction) for s in backward if name in s.sql]
    assert drops == [(f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"', False)]
    builds = [s for s in forward if s.sql.startswith("CREATE INDEX")]
    assert [(s.sql.split(" ON ")[0], s.in_transaction) for s in builds] == [
        (f'CREATE INDEX CONCURRENTLY "{name}"', False)
    ]
    built = index_state(name)
    assert built is not None and built.valid


def test_migrate_run_again_after_a_failed_build_replaces_the_invalid_index(latest_schema: None) -> None:
    name = "run_org_active_idx"
    before = index_state(name)
    assert before is not None
    migrate("runs", "0004_attempt_interrupted")

    with long_transaction_elsewhere(), pytest.raises(OperationalError, match="lock timeout"):
        migrate("runs", "0005_run_org_active_idx")
    left = index_state(name)
    assert left is not None and not left.valid  # what the failed build left
    assert not applied("runs", "0005_run_org_active_idx")

    migrate("runs", "0005_run_org_active_idx")  # what the operator does: run migrate again

    rebuilt = index_state(name)
    assert rebuilt is not None and rebuilt.valid
    assert rebuilt.oid != left.oid
    assert rebuilt.definition == before.definition
    assert applied("runs", "0005_run_org_active_idx")


def test_a_valid_index_of_the_same_name_is_kept_as_it_is(latest_schema: None) -> None:
    name = "run_schedule_active_idx"
    definition = index_state(name)
    assert definition is not None
    migrate("runs", "0006_drop_redundant_fk_indexes")
    # An operator built it ahead of the upgrade (or a run of the migration built it and then failed to record it).
    with connection.cursor() as cursor:
        cursor.execute(definition.definition.replace("CREATE INDEX", "CREATE INDEX CONCURRENTLY", 1))
    by_hand = index_state(name)
    assert by_hand is not None and by_hand.valid

    with recorded_statements() as statements:
        migrate("runs", "0007_run_schedule_active_idx")

    assert index_state(name) == by_hand
    assert not [s for s in statements if s.sql.startswith(("CREATE INDEX", "DROP INDEX"))]
    assert applied("runs", "0007_run_schedule_active_idx")


def test_in_a_transaction_on_postgresql_it_refuses_and_says_how_to_fix_it(latest_schema: None) -> None:
    migrate("runs", "0006_drop_redundant_fk_indexes")
    loader = MigrationLoader(connection)
    key = ("runs", "0007_run_schedule_active_idx")
    operation = loader.get_migration(*key).operations[0]
    from_state = loader.project_state(("runs", "0006_drop_redundant_fk_indexes"))
    to_state = loader.project_state(key)

    with (
        pytest.raises(NotSupportedError, match=r"inside a transaction \(set atomic = False on the migration\)"),
        connection.schema_editor(atomic=True) as editor,
    ):
        operation.database_forwards("runs", editor, from_state, to_state)
    assert index_state("run_schedule_active_idx") is None


@pytest.mark.parametrize(("app", "name", "index"), INDEX_MIGRATIONS)
def test_the_migration_state_is_the_one_addindex_and_addfield_give(app: str, name: str, index: str) -> None:
    loader = MigrationLoader(None, ignore_no_migrations=True)
    operations = loader.get_migration(app, name).operations
    ours = next(op for op in operations if isinstance(op, AddIndexConcurrently))
    plain = AddIndex(model_name=ours.model_name, index=ours.index)
    assert ours.index.name == index
    assert ours.describe() == plain.describe()
    assert ours.deconstruct()[1:] == plain.deconstruct()[1:]
    assert ours.migration_name_fragment == plain.migration_name_fragment

    def django_own(op: Operation) -> Operation:
        if isinstance(op, AddIndexConcurrently):
            return AddIndex(model_name=op.model_name, index=op.index)
        if isinstance(op, AddFieldIfMissing):
            return AddField(model_name=op.model_name, name=op.name, field=op.field)
        return op

    before = loader.project_state((app, name), at_end=False)
    with_ours, with_django_own = before.clone(), before.clone()
    for op in operations:
        op.state_forwards(app, with_ours)
        django_own(op).state_forwards(app, with_django_own)
    assert with_ours.models == with_django_own.models
    assert index in {i.name for i in with_ours.models[app, ours.model_name_lower].options["indexes"]}


def test_makemigrations_finds_no_change() -> None:
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)  # exits 1 when the state differs


_SQLITE_CHILD = textwrap.dedent(
    """
    import json
    import sys
    from io import StringIO

    import django
    from django.core.management import call_command

    django.setup()
    from django.db import connection

    call_command("migrate", verbosity=0)
    out = StringIO()
    call_command("sqlmigrate", "runs", "0007_run_schedule_active_idx", stdout=out)
    names = sys.argv[1:]
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        indexes = sorted(row[0] for row in cursor.fetchall() if row[0] in names)
    print(json.dumps({"vendor": connection.vendor, "sql": out.getvalue(), "indexes": indexes}))
    """
)


@pytest.mark.django_db(False)
def test_on_sqlite_the_migrations_build_plain_indexes_in_one_transaction(tmp_path: Path) -> None:
    names = sorted(index for _, _, index in INDEX_MIGRATIONS)
    got: dict[str, Any] = embedded_child(_SQLITE_CHILD, tmp_path, *names)
    assert got["vendor"] == "sqlite"
    assert got["indexes"] == names
    assert got["sql"].startswith("BEGIN;")
    assert 'CREATE INDEX "run_schedule_active_idx" ON "runs_run"' in got["sql"]
    assert "CONCURRENTLY" not in got["sql"]


@contextmanager
def table_held_elsewhere(table: str) -> Iterator[psycopg.Connection[Any]]:
    """Another session inside a transaction that has read ``table`` (a long report query): it holds ACCESS SHARE on
    the table until it ends, so ``ALTER TABLE`` cannot have its ACCESS EXCLUSIVE lock."""
    db = connection.settings_dict
    other = psycopg.connect(
        host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"], dbname=db["NAME"], autocommit=True
    )
    try:
        other.execute("BEGIN")
        other.execute(f"SELECT 1 FROM {table} LIMIT 1")
        yield other
    finally:
        other.close()


def _lock_timeout() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW lock_timeout")
        return str(cursor.fetchone()[0])


def test_adding_a_column_behind_a_long_transaction_gives_up_in_turns_and_succeeds_when_it_ends(
    latest_schema: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate("runs", "0008_run_claim_function")
    before = _lock_timeout()
    monkeypatch.setattr(migration_ops, "ADD_COLUMN_LOCK_TIMEOUT", "100ms")
    monkeypatch.setattr(migration_ops, "ADD_COLUMN_TRIES", 5)
    pauses: list[float] = []
    with table_held_elsewhere("runs_run") as other:

        def pause(seconds: float) -> None:  # the report query ends during the second pause
            pauses.append(seconds)
            if len(pauses) == 2:
                other.execute("COMMIT")

        monkeypatch.setattr(migration_ops, "_pause", pause)
        migrate("runs", "0009_run_agent")
    assert len(pauses) == 2  # two tries timed out (letting the queue behind them drain), the third added it
    assert applied("runs", "0009_run_agent")
    assert "agent" in _run_columns()
    assert _lock_timeout() == before  # the session's own setting is given back


def test_adding_a_column_stops_after_its_tries_with_the_table_unchanged_and_says_why(
    latest_schema: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate("runs", "0008_run_claim_function")
    before = _lock_timeout()
    monkeypatch.setattr(migration_ops, "ADD_COLUMN_LOCK_TIMEOUT", "100ms")
    monkeypatch.setattr(migration_ops, "ADD_COLUMN_TRIES", 2)
    monkeypatch.setattr(migration_ops, "_pause", lambda seconds: None)
    with table_held_elsewhere("runs_run"), pytest.raises(OperationalError) as raised:
        migrate("runs", "0009_run_agent")
    assert str(raised.value) == (
        "could not lock runs_run to add column agent in 2 tries of 100ms each: another transaction holds the table "
        "(find it in pg_stat_activity); run migrate again once it has ended"
    )
    assert "agent" not in _run_columns()
    assert not applied("runs", "0009_run_agent")
    assert _lock_timeout() == before


def _run_columns() -> set[str]:
    with connection.cursor() as cursor:
        return {c.name for c in connection.introspection.get_table_description(cursor, "runs_run")}


# (app, migration before, migration, index) of every migration that drops an index with DropIndexConcurrently.
DROP_MIGRATIONS = [
    (
        "schedules",
        "0003_schedule_org_agent_name_idx",
        "0004_drop_schedule_organization_index",
        "schedules_schedule_organization_id_8bb21e99",
    ),
    (
        "observability",
        "0001_initial",
        "0002_drop_webhook_delivery_subscription_index",
        "observability_webhookdelivery_subscription_id_e21be8fd",
    ),
]


@pytest.mark.parametrize(("app", "before", "migration", "name"), DROP_MIGRATIONS)
def test_a_redundant_index_is_dropped_concurrently_and_built_again_backwards(
    latest_schema: None, app: str, before: str, migration: str, name: str
) -> None:
    assert index_state(name) is None
    with recorded_statements() as backward:
        migrate(app, before)
    restored = index_state(name)
    assert restored is not None and restored.valid
    with recorded_statements() as forward:
        migrate(app, migration)
    assert index_state(name) is None

    # Neither blocks the table's writes: both run outside a transaction, concurrently.
    assert [(s.sql, s.in_transaction) for s in forward if name in s.sql] == [
        (f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"', False)
    ]
    assert [(s.sql.split(" ON ")[0], s.in_transaction) for s in backward if name in s.sql] == [
        (f'CREATE INDEX CONCURRENTLY "{name}"', False)
    ]
    # A second run (after a failure to record it, say) drops nothing and fails on nothing.
    MigrationRecorder.Migration.objects.filter(app=app, name=migration).delete()
    migrate(app, migration)
    assert applied(app, migration)


def test_building_a_dropped_index_again_replaces_what_a_failed_build_left(latest_schema: None) -> None:
    app, before, migration, name = DROP_MIGRATIONS[0]
    migrate(app, before)
    definition = index_state(name)
    assert definition is not None
    migrate(app, migration)
    with long_transaction_elsewhere(), pytest.raises(OperationalError, match="lock timeout"):
        migrate(app, before)
    left = index_state(name)
    assert left is not None and not left.valid  # what the failed build left

    migrate(app, before)  # what the operator does: run migrate again

    rebuilt = index_state(name)
    assert rebuilt is not None and rebuilt.valid and rebuilt.definition == definition.definition
