"""An event action can wait for the external executor that handles the event to report the outcome."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from echoflow.accounts.models import Organization
from echoflow.events.models import OutboxEvent
from runs.executor import run_execute
from runs.models import AttemptOutcome, Run, RunAttempt, RunStatus
from runs.report import run_report
from runs.services import run_create_adhoc, runs_reap

# The action runs in its own thread with its own connection, so its outbox rows commit outside a test
# transaction: flush the database after each test instead.
pytestmark = pytest.mark.django_db(transaction=True)


def _event_run(org: Organization, **extra: object) -> Run:
    run, _ = run_create_adhoc(
        organization=org,
        action_kind="event",
        action_name="billing.invoice.requested",
        action_config={"wait_for_report": True},
        payload={"invoice": 7},
        timeout_seconds=60,
        **extra,  # type: ignore[arg-type]
    )
    return run


def test_the_run_waits_for_the_report_and_the_report_finishes_it(org: Organization) -> None:
    run = _event_run(org)
    assert run_execute(run_id=run.pk, worker="w") == RunStatus.RUNNING
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING and run.report_by is not None
    published = OutboxEvent.objects.get(type="billing.invoice.requested")
    assert published.run_id == run.pk and published.data["payload"] == {"invoice": 7}
    attempt = RunAttempt.objects.get(run=run)
    assert attempt.outcome == AttemptOutcome.RUNNING
    assert attempt.output == {"event_id": str(published.event_id), "type": "billing.invoice.requested"}

    assert runs_reap() == 0  # silence before the deadline is not a dead worker
    _, status = run_report(run=run, status="succeeded", output={"invoice_id": "INV-7"})
    assert status == RunStatus.SUCCEEDED
    run.refresh_from_db()
    assert run.output == {"invoice_id": "INV-7"}
    assert RunAttempt.objects.get(run=run).outcome == AttemptOutcome.SUCCEEDED


def test_no_report_within_the_timeout_times_the_attempt_out(org: Organization) -> None:
    run = _event_run(org, max_attempts=1)
    run_execute(run_id=run.pk, worker="w")
    run.refresh_from_db()
    assert run.report_by is not None
    with time_machine.travel(run.report_by + timedelta(seconds=1), tick=False):
        assert runs_reap(now=timezone.now()) == 1
    run.refresh_from_db()
    assert run.status == RunStatus.TIMED_OUT
    attempt = RunAttempt.objects.get(run=run)
    assert attempt.outcome == AttemptOutcome.TIMED_OUT
    assert "no report arrived within the timeout of 60 s" in attempt.error


def test_an_event_without_wait_for_report_succeeds_at_once(org: Organization) -> None:
    run, _ = run_create_adhoc(organization=org, action_kind="event", action_name="audit.ping")
    assert run_execute(run_id=run.pk, worker="w") == RunStatus.SUCCEEDED
