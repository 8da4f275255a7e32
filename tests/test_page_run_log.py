"""The run log panel: runs newest first with their attempts, polling while a run is not final, retry, cancel."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from echoflow.accounts.models import Organization
from runs.models import AttemptOutcome, Run, RunStatus
from tests.test_page_support import htmx, make_run, make_schedule, member

pytestmark = pytest.mark.django_db


def url(name: str, *args: int) -> str:
    return reverse(f"schedules_web:{name}", args=args)


@pytest.fixture
def operator(org: Organization) -> Client:
    client = Client()
    client.force_login(member(org, "operator"))
    return client


def run_ids(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'<li class="run" id="run-(\d+)"', html)]


def test_run_log_lists_runs_newest_first_with_every_attempt(org: Organization, operator: Client) -> None:
    schedule = make_schedule(org, "nightly export", timezone="Europe/Berlin")
    now = timezone.now()
    old = make_run(
        org,
        schedule,
        status=RunStatus.FAILED,
        created_at=now - timedelta(hours=2),
        attempts=[
            (AttemptOutcome.FAILED, "ConnectionError: warehouse refused", None),
            (AttemptOutcome.TIMED_OUT, "the attempt exceeded its timeout of 300 s", None),
        ],
    )
    new = make_run(
        org, schedule, created_at=now - timedelta(minutes=5), attempts=[(AttemptOutcome.SUCCEEDED, "", {"rows": 42})]
    )
    html = operator.get(url("schedule_runs", schedule.pk), **htmx("panel-region")).content.decode()
    assert run_ids(html) == [new.pk, old.pk]
    assert "times in Europe/Berlin" in html
    assert "Attempts</span> 2 of 3" in html
    assert "ConnectionError: warehouse refused" in html  # every attempt's error, not only the last
    assert "the attempt exceeded its timeout of 300 s" in html
    assert "&quot;rows&quot;: 42" in html  # the output
    assert "Duration</span> 2.0 s" in html
    assert "every 2s" not in html  # all final: no polling
    assert 'data-action="retry"' in html
    assert 'data-action="make-recurring"' not in html  # an operator cannot create schedules


def test_run_log_polls_while_a_run_is_not_final_and_keeps_expanded_runs_open(
    org: Organization, operator: Client
) -> None:
    schedule = make_schedule(org)
    running = make_run(org, schedule, status=RunStatus.RUNNING, attempts=[(AttemptOutcome.RUNNING, "", None)])
    done = make_run(org, schedule, created_at=timezone.now() - timedelta(hours=1))
    html = operator.get(url("schedule_runs", schedule.pk) + f"?open={done.pk}", **htmx()).content.decode()
    assert 'hx-trigger="panel-changed from:body, every 2s"' in html
    assert f'data-run="{done.pk}" open' in html
    assert f'data-run="{running.pk}" open' not in html
    assert "so far" in html  # a running attempt's duration grows
    assert 'data-action="cancel"' in html

    Run.objects.filter(pk=running.pk).update(status=RunStatus.SUCCEEDED, finished_at=timezone.now())
    response = operator.get(url("schedule_runs", schedule.pk) + "?polling=1", **htmx())
    assert "every 2s" not in response.content.decode()
    # The last run just finished: the table and tiles are told to refresh once.
    assert "schedules-changed" in response["HX-Trigger"]


def test_retry_a_failed_run_and_refuse_to_retry_a_succeeded_one(org: Organization, operator: Client) -> None:
    schedule = make_schedule(org)
    failed = make_run(org, schedule, status=RunStatus.FAILED, attempts=[(AttemptOutcome.FAILED, "boom", None)])
    response = operator.post(url("run_retry", failed.pk), {"open": ""}, **htmx("run-panel"))
    assert response.status_code == 200
    failed.refresh_from_db()
    assert failed.status == RunStatus.QUEUED
    html = response.content.decode()
    assert f"Run #{failed.pk} queued again" in html
    assert f'data-run="{failed.pk}" open' in html  # the retried run is expanded to watch it

    succeeded = make_run(org, schedule)
    refused = operator.post(url("run_retry", succeeded.pk), **htmx("run-panel"))
    assert refused.status_code == 409
    assert "Not retried: run" in refused.content.decode()
    assert "only failed, timed-out or cancelled runs can be retried" in refused.content.decode()


def test_cancel_a_queued_run(org: Organization, operator: Client) -> None:
    schedule = make_schedule(org)
    queued = make_run(org, schedule, status=RunStatus.QUEUED)
    response = operator.post(url("run_cancel", queued.pk), **htmx("run-panel"))
    assert response.status_code == 200
    assert f"Run #{queued.pk} cancelled." in response.content.decode()
    queued.refresh_from_db()
    assert queued.status == RunStatus.CANCELLED
    assert queued.status_reason.startswith("cancelled on the schedules page by operator-acme")
    again = operator.post(url("run_cancel", queued.pk), **htmx("run-panel"))
    assert again.status_code == 409
    assert "is already cancelled" in again.content.decode()


def test_empty_run_log_says_when_the_first_run_is(org: Organization, operator: Client) -> None:
    schedule = make_schedule(org)
    html = operator.get(url("schedule_runs", schedule.pk), **htmx()).content.decode()
    assert "No runs yet" in html
    assert "The first one is due in" in html
    assert "Run now" in html


def test_run_log_opens_from_a_shared_link(org: Organization, operator: Client) -> None:
    schedule = make_schedule(org, "nightly export")
    run = make_run(org, schedule)
    html = operator.get(reverse("schedules_web:index") + f"?org={org.slug}&schedule={schedule.pk}").content.decode()
    assert '<section id="run-panel"' in html
    assert f"Run #{run.pk}" in html
