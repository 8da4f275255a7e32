"""Migrations: what they write into tables that already hold rows, and the indexes they leave."""

from __future__ import annotations

import importlib
import math
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from django.core.management import call_command
from django.db import OperationalError, connection

from echoflow.accounts.models import Organization
from runs.models import Run
from runs.services import run_create_adhoc
from tests.conftest import embedded_child
from tests.test_api_helpers import make_schedule, queued_run
from tests.test_migration_ops import (
    Statement,
    applied,
    index_state,
    long_transaction_elsewhere,
    migrate,
    recorded_statements,
)

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


run_agent = importlib.import_module("runs.migrations.0009_run_agent")


class _Editor:
    """The part of a schema editor the migration's function uses, as either database vendor would give it."""

    def __init__(self, vendor: str) -> None:
        self.connection = SimpleNamespace(vendor=vendor, cursor=connection.cursor)

    def execute(self, sql: str, params: tuple[Any, ...] | None = None) -> None:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)


@pytest.mark.parametrize("vendor", ["postgresql", "sqlite"])
def test_0009_gives_existing_runs_their_schedules_agent(org: Organization, vendor: str) -> None:
    eu = queued_run(org, make_schedule(org, "eu", agent="eu-1"))
    us = queued_run(org, make_schedule(org, "us", agent="us-1"))
    blank = queued_run(org, make_schedule(org, "none", agent=""))
    adhoc, _ = run_create_adhoc(organization=org, action_kind="python", action_name="echoflow.noop")
    Run.objects.update(agent="")  # as the rows were before the column existed

    run_agent.copy_agents(None, _Editor(vendor))

    agents = dict(Run.objects.values_list("pk", "agent"))
    assert agents == {eu.pk: "eu-1", us.pk: "us-1", blank.pk: "", adhoc.pk: ""}


@pytest.fixture
def latest_schema(transactional_db: None) -> Iterator[None]:
    """Bring every app back to its last migration after the test (before the database is flushed)."""
    yield
    call_command("migrate", verbosity=0)


def _runs_of_three_schedules_and_adhoc(org: Organization, per_schedule: int) -> dict[int, str]:
    """Runs of schedules with and without an agent and ad hoc runs, as the app makes them: run id -> agent."""
    schedules = [make_schedule(org, "eu", agent="eu-1"), make_schedule(org, "us", agent="us-1"), make_schedule(org)]
    for _ in range(per_schedule):
        for schedule in schedules:
            queued_run(org, schedule)
        run_create_adhoc(organization=org, action_kind="python", action_name="echoflow.noop")
    agents = dict(Run.objects.values_list("pk", "agent"))
    assert sorted(set(agents.values())) == ["", "eu-1", "us-1"]
    return agents


def _batches(statements: list[Statement]) -> list[Statement]:
    """The copy's UPDATEs (PostgreSQL's schema editor runs them with their parameters merged in)."""
    return [s for s in statements if s.sql.startswith(run_agent.POSTGRESQL_BATCH.partition("%s")[0])]


def _agent_column_exists() -> bool:
    with connection.cursor() as cursor:
        return "agent" in {c.name for c in connection.introspection.get_table_description(cursor, "runs_run")}


@pytest.mark.django_db(transaction=True)
def test_0009_backward_and_forward_gives_every_run_its_schedules_agent_batch_by_batch(
    org: Organization, latest_schema: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = _runs_of_three_schedules_and_adhoc(org, per_schedule=5)  # 20 runs
    monkeypatch.setattr(run_agent, "BATCH_SIZE", 6)
    migrate("runs", "0008_run_claim_function")
    assert not _agent_column_exists()

    with recorded_statements() as statements:
        migrate("runs", "0009_run_agent")

    assert dict(Run.objects.values_list("pk", "agent")) == made
    batches = _batches(statements)
    assert len(batches) == math.ceil((max(made) - min(made) + 1) / 6) >= 4
    assert not [b for b in batches if b.in_transaction]  # each batch commits on its own
    assert [b.rows for b in batches if b.rows > 6] == []
    assert sum(b.rows for b in batches) == 10  # the runs of the two schedules with an agent, once each


@pytest.mark.django_db(transaction=True)
def test_0009_run_again_after_its_index_build_failed_finishes_without_copying_twice(
    org: Organization, latest_schema: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = _runs_of_three_schedules_and_adhoc(org, per_schedule=3)
    monkeypatch.setattr(run_agent, "BATCH_SIZE", 4)
    migrate("runs", "0008_run_claim_function")

    with long_transaction_elsewhere(), pytest.raises(OperationalError, match="lock timeout"):
        migrate("runs", "0009_run_agent")
    assert _agent_column_exists() and dict(Run.objects.values_list("pk", "agent")) == made  # committed before
    left = index_state("run_org_agent_created_idx")
    assert left is not None and not left.valid
    assert not applied("runs", "0009_run_agent")

    with recorded_statements() as statements:
        migrate("runs", "0009_run_agent")

    assert applied("runs", "0009_run_agent")
    rebuilt = index_state("run_org_agent_created_idx")
    assert rebuilt is not None and rebuilt.valid
    assert dict(Run.objects.values_list("pk", "agent")) == made
    assert not [s for s in statements if s.sql.startswith("ALTER TABLE")]  # the column was kept
    second_copy = _batches(statements)
    assert second_copy and [b.rows for b in second_copy] == [0] * len(second_copy)  # nothing rewritten


_SQLITE_CHILD = textwrap.dedent(
    """
    import json

    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from django.db import connection

    from echoflow.accounts.services import organization_get_or_create
    from runs.models import Run
    from runs.services import run_create_adhoc, schedule_run_now
    from schedules.services import schedule_create

    org = organization_get_or_create(name="Acme", slug="acme")
    for name, agent in [("eu", "eu-1"), ("us", "us-1"), ("none", "")]:
        data = {"name": name, "trigger_kind": "cron", "cron": "0 2 * * *", "action_name": "echoflow.noop"}
        schedule = schedule_create(organization=org, data={**data, "agent": agent})
        for _ in range(3):
            schedule_run_now(schedule=schedule)
    run_create_adhoc(organization=org, action_kind="python", action_name="echoflow.noop")
    made = dict(Run.objects.values_list("pk", "agent"))

    def columns():
        with connection.cursor() as cursor:
            return {c.name for c in connection.introspection.get_table_description(cursor, "runs_run")}

    call_command("migrate", "runs", "0008_run_claim_function", verbosity=0)
    dropped = "agent" not in columns()
    call_command("migrate", "runs", "0009_run_agent", verbosity=0)
    print(json.dumps({"vendor": connection.vendor, "dropped": dropped, "made": made,
                      "after": dict(Run.objects.values_list("pk", "agent"))}))
    """
)


@pytest.mark.django_db(False)
def test_0009_on_sqlite_backward_and_forward_gives_every_run_its_schedules_agent(tmp_path: Path) -> None:
    got = embedded_child(_SQLITE_CHILD, tmp_path)
    assert got["vendor"] == "sqlite"
    assert got["dropped"]
    assert sorted(got["made"].values()) == ["", "", "", "", "eu-1", "eu-1", "eu-1", "us-1", "us-1", "us-1"]
    assert got["after"] == got["made"]


def test_0002_leaves_the_outbox_one_type_index_and_no_pattern_twin() -> None:
    """Each event written updates every index of the outbox: the LIKE-pattern index no query used is gone, and the
    type index (the admin's filter) is the one the model declares."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'events_outboxevent'")
        names = {row[0] for row in cursor.fetchall()}
    assert names == {
        "events_outboxevent_pkey",
        "events_outboxevent_event_id_key",
        "outbox_type_idx",
        "outbox_pending_idx",
    }


def _claim_functions() -> dict[str, str]:
    """The executor's functions in the database: name -> arguments."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT proname, pg_get_function_identity_arguments(oid) FROM pg_proc WHERE proname LIKE 'echoflow_run_%'"
        )
        return dict(cursor.fetchall())


@pytest.mark.django_db(transaction=True)
def test_0011_backward_restores_0010s_claim_and_forward_adds_the_combined_statement(latest_schema: None) -> None:
    migrate("runs", "0010_run_claim_by_key")
    assert _claim_functions() == {
        "echoflow_run_claim": "p_run_id bigint, p_worker text, p_now timestamp with time zone, "
        "p_occurred_at timestamp with time zone"
    }

    migrate("runs", "0011_run_succeed_then_claim")

    functions = _claim_functions()
    assert sorted(functions) == ["echoflow_run_claim", "echoflow_run_succeed", "echoflow_run_succeed_then_claim"]
    # One claim function, taking the four arguments of old callers too (p_skip_locked defaults to false).
    assert functions["echoflow_run_claim"].endswith("p_occurred_at timestamp with time zone, p_skip_locked boolean")
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM echoflow_run_claim(0, 'w', now(), now())")
        assert cursor.fetchall() == []
