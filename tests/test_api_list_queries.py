"""The list endpoints' SQL: a page costs a fixed number of queries however many rows it shows, and each page query
can be answered from its index (the plans measured on 1M runs are in docs/benchmarks.md, scenario 5).

Plans are checked with sequential scans switched off, which makes PostgreSQL use an index able to answer the query
(a test table of a few rows would otherwise always be scanned). What this proves is that each index and the SQL
the ORM writes still fit each other: an expression or GIN index stops serving silently when either changes.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from echoflow.accounts.models import Organization
from echoflow.api.filters import ScheduleFilter
from runs.models import RunAttempt, RunStatus
from schedules.models import Schedule
from tests.test_api_helpers import (
    API,
    _fresh_rate_limits,  # noqa: F401
    client_for,
    make_schedule,
    queued_run,
    run_in,
)

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


@pytest.fixture
def viewer(org: Organization) -> APIClient:
    client = client_for(org, "viewer")
    client.get(f"{API}/runs/")  # the token's last_used_at is written on first use only: keep it out of the counts
    return client


def _queries(client: APIClient, path: str) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(path)
    assert response.status_code == 200, response.content
    return [query["sql"] for query in captured.captured_queries]


def _page_query(client: APIClient, path: str, table: str) -> str:
    return [sql for sql in _queries(client, path) if f'FROM "{table}"' in sql and " LIMIT " in sql][-1]


def _plan(sql: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # the test's transaction only
        cursor.execute("EXPLAIN " + sql)
        return "\n".join(row[0] for row in cursor.fetchall())


def test_a_page_of_runs_costs_the_same_queries_for_3_or_12_runs(org: Organization, viewer: APIClient) -> None:
    schedules = [make_schedule(org, f"s{index}") for index in range(4)]
    for schedule in schedules[:3]:
        queued_run(org, schedule)
    few = _queries(viewer, f"{API}/runs/?status=queued&status=failed")
    for index in range(9):
        queued_run(org, schedules[index % 4])
    many = _queries(viewer, f"{API}/runs/?status=queued&status=failed")
    # The token, the membership, the page: the schedule names come in the page's own query.
    assert len(many) == len(few) == 3
    assert "DISTINCT" not in many[-1]
    body: dict[str, Any] = viewer.get(f"{API}/runs/").json()
    assert {row["schedule_name"] for row in body["results"]} == {"s0", "s1", "s2", "s3"}


def test_a_run_is_read_once_with_its_attempts(org: Organization, viewer: APIClient) -> None:
    run = run_in(org, RunStatus.FAILED, attempts=2)
    RunAttempt.objects.create(run=run, number=1, started_at=run.created_at, outcome="failed")
    RunAttempt.objects.create(run=run, number=2, started_at=run.created_at, outcome="failed")
    queries = _queries(viewer, f"{API}/runs/{run.pk}/")
    assert len(queries) == 4  # the token, the membership, the run (with its schedule's name), its attempts
    body = viewer.get(f"{API}/runs/{run.pk}/").json()
    assert [attempt["number"] for attempt in body["attempt_log"]] == [1, 2]
    assert body["schedule_name"] == run.schedule.name if run.schedule else None


def test_a_page_of_schedules_does_not_join_the_organization(org: Organization, viewer: APIClient) -> None:
    make_schedule(org, "one")
    queries = _queries(viewer, f"{API}/schedules/")
    assert len(queries) == 3
    assert "accounts_organization" not in queries[-1]


@pytest.mark.parametrize(
    ("query", "index"),
    [
        ("ordering=-created_at", "schedule_org_created_idx"),
        ("ordering=updated_at", "schedule_org_updated_idx"),
        ("", "schedule_name_unique_in_org"),
    ],
)
def test_schedule_list_orderings_read_their_index(org: Organization, viewer: APIClient, query: str, index: str) -> None:
    make_schedule(org, "billing export")
    assert index in _plan(_page_query(viewer, f"{API}/schedules/?{query}", "schedules_schedule"))


@pytest.mark.parametrize(
    ("params", "index"),
    [
        ({"q": "billing"}, "schedule_text_trgm_idx"),
        ({"label": "team=billing"}, "schedule_labels_gin_idx"),
        ({"label": "replicas=3"}, "schedule_labels_gin_idx"),
        ({"label": "tier"}, "schedule_labels_gin_idx"),
    ],
)
def test_schedule_text_and_label_filters_fit_their_gin_index(
    org: Organization, params: dict[str, str], index: str
) -> None:
    """The filter's condition alone, with plain index scans off too: only an index that matches the condition can
    serve it (as a bitmap scan), so its name in the plan shows the index and the ORM's SQL agree."""
    make_schedule(org, "billing export", labels={"team": "billing", "tier": "gold", "replicas": 3})
    query = ScheduleFilter(params, queryset=Schedule.objects.order_by()).qs
    assert query.exists()
    sql, sql_params = query.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_indexscan = off")
        cursor.execute("EXPLAIN " + sql, sql_params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert index in plan


def _plan_by_index(sql: str) -> str:
    """The plan with sequential and bitmap scans off: only an index that answers the query in its order serves it."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        cursor.execute("EXPLAIN " + sql)
        return "\n".join(row[0] for row in cursor.fetchall())


def _runs_for_agents(org: Organization) -> None:
    for name, agent in (("eu export", "eu-1"), ("us export", "us-1"), ("no agent", "")):
        queued_run(org, make_schedule(org, name, agent=agent))


def test_the_run_agent_filter_reads_the_runs_own_agent_index(org: Organization, viewer: APIClient) -> None:
    """The run's own copy of the agent, not its schedule's: a join per candidate run was the 1M-run benchmark's
    slowest run query."""
    _runs_for_agents(org)
    sql = _page_query(viewer, f"{API}/runs/?agent=eu-1", "runs_run")
    assert '"schedules_schedule"."agent"' not in sql
    plan = _plan_by_index(sql)
    assert "run_org_agent_created_idx" in plan, plan


@pytest.mark.parametrize("query", ["agent=eu-1", "agent=eu-1&state=active&trigger_kind=cron"])
def test_schedule_agent_filters_read_that_agents_schedules_in_name_order(
    org: Organization, viewer: APIClient, query: str
) -> None:
    _runs_for_agents(org)
    plan = _plan_by_index(_page_query(viewer, f"{API}/schedules/?{query}", "schedules_schedule"))
    assert "schedule_org_agent_name_idx" in plan, plan
