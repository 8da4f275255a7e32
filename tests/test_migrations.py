"""Migrations: what they write into tables that already hold rows, and the indexes they leave."""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import pytest
from django.db import connection

from echoflow.accounts.models import Organization
from runs.models import Run
from runs.services import run_create_adhoc
from tests.test_api_helpers import make_schedule, queued_run

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

run_agent = importlib.import_module("runs.migrations.0009_run_agent")


class _Editor:
    """The part of a schema editor the migration's function uses, as either database vendor would give it."""

    def __init__(self, vendor: str) -> None:
        self.connection = SimpleNamespace(vendor=vendor)

    def execute(self, sql: str) -> None:
        with connection.cursor() as cursor:
            cursor.execute(sql)


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
