"""Statements that update one row found by its key (a run's transition, its heartbeat, a webhook delivery's outcome)
read it by that key, whatever the planner's statistics say about its status (echoflow/unindexed.py)."""

from __future__ import annotations

import uuid

import pytest
from django.core import mail
from django.db import connection, transaction
from django.utils import timezone

from echoflow.accounts.models import Organization
from echoflow.observability.delivery import Outcome, _record_webhook, alert_emails_send_due
from echoflow.observability.models import Alert, AlertEmail, AlertRule, DeliveryStatus, WebhookDelivery
from echoflow.observability.services import webhook_subscription_create
from runs.models import Run, RunStatus
from runs.services import run_create_adhoc
from runs.transitions import run_transition, status_in
from tests.test_attempt_writes import index_entries_read

# Committed and then truncated, not rolled back: a rolled-back burst would leave hundreds of dead entries in the
# status indexes, which the next test's statements would read (tests/test_attempt_writes.py counts them).
pytestmark = [pytest.mark.postgres]

# Every index of runs_run that a status condition could let the planner read a run through.
STATUS_INDEXES = (
    "run_status_idx",
    "run_resend_due_idx",
    "run_to_enqueue_idx",
    "run_retry_due_idx",
    "run_org_active_idx",
    "run_schedule_active_idx",
)


def _burst(org: Organization, count: int, tag: str) -> list[Run]:
    return [
        run_create_adhoc(
            organization=org, action_kind="python", action_name="echoflow.noop", idempotency_key=f"{tag}-{i}"
        )[0]
        for i in range(count)
    ]


def _quiet_statistics(org: Organization) -> None:
    """Statistics gathered when no run was queued, waiting, running or retrying."""
    Run.objects.filter(pk__in=[r.pk for r in _burst(org, 200, "quiet")]).update(status=RunStatus.SUCCEEDED)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE runs_run")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("status", "to"),
    [
        (RunStatus.QUEUED, RunStatus.WAITING),  # the ORM claim path: a run over a limit waits
        (RunStatus.QUEUED, RunStatus.CANCELLED),
        (RunStatus.RETRYING, RunStatus.QUEUED),
        (RunStatus.RUNNING, RunStatus.FAILED),  # the ORM finish path
        (RunStatus.WAITING, RunStatus.QUEUED),
    ],
)
def test_a_transition_reads_its_run_by_key_in_a_burst_after_quiet_statistics(
    org: Organization, status: str, to: str
) -> None:
    # A burst after statistics from a quiet moment: read through a status index, each transition would read every
    # run of the burst (300), and a burst would cost O(N^2).
    _quiet_statistics(org)
    burst = _burst(org, 300, "burst")
    Run.objects.filter(pk__in=[r.pk for r in burst]).update(status=status, attempts=1)
    with transaction.atomic():  # the counts are this transaction's own
        before = index_entries_read(STATUS_INDEXES)
        for run in burst[-8:]:
            run.refresh_from_db()
            assert run_transition(run=run, to=to, sources=[status])
        assert index_entries_read(STATUS_INDEXES) == before
    assert Run.objects.filter(pk__in=[r.pk for r in burst[-8:]], status=to).count() == 8


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_reads_its_run_by_key(org: Organization) -> None:
    # The executor's heartbeat and its wait for an external report update a running run by key and status.
    _quiet_statistics(org)
    burst = _burst(org, 300, "burst")
    Run.objects.filter(pk__in=[r.pk for r in burst]).update(status=RunStatus.RUNNING, attempts=1)
    with transaction.atomic():
        before = index_entries_read(STATUS_INDEXES)
        for run in burst[-8:]:
            assert Run.objects.filter(status_in([RunStatus.RUNNING]), pk=run.pk, attempts=1).update(worker="w") == 1
        assert index_entries_read(STATUS_INDEXES) == before
    # The condition still decides: a run in another status is not moved.
    Run.objects.filter(pk=burst[0].pk).update(status=RunStatus.CANCELLED)
    assert Run.objects.filter(status_in([RunStatus.RUNNING]), pk=burst[0].pk).update(worker="x") == 0


@pytest.mark.django_db(transaction=True)
def test_a_webhook_delivery_outcome_reads_its_delivery_by_key_in_a_burst(org: Organization) -> None:
    subscription = webhook_subscription_create(
        organization=org, name="ops", url="https://hooks.example.com/x", event_types=["*"]
    )

    def deliveries(count: int, status: str) -> list[WebhookDelivery]:
        return WebhookDelivery.objects.bulk_create(
            WebhookDelivery(
                subscription=subscription, event_id=uuid.uuid4(), event_type="run.succeeded", payload={},
                status=status, attempts=1, next_attempt_at=timezone.now(),
            )
            for _ in range(count)
        )  # fmt: skip

    deliveries(200, DeliveryStatus.SUCCEEDED)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE observability_webhookdelivery")
    burst = deliveries(300, DeliveryStatus.PENDING)
    with transaction.atomic():
        before = index_entries_read(("webhook_delivery_due_idx",))
        for delivery in burst[-8:]:
            _record_webhook(delivery, Outcome(True, status_code=204), timezone.now())
        # Read through the index of pending deliveries, each outcome would read all 300.
        assert index_entries_read(("webhook_delivery_due_idx",)) == before
    assert WebhookDelivery.objects.filter(status=DeliveryStatus.SUCCEEDED).count() == 208


@pytest.mark.django_db(transaction=True)
def test_an_alert_email_outcome_reads_its_email_by_key_in_a_burst() -> None:
    alert = Alert.objects.create(
        rule=AlertRule.DISPATCHER_STALLED, key="dispatcher", title="The dispatcher stalled", raised_at=timezone.now()
    )

    def emails(count: int, status: str) -> None:
        AlertEmail.objects.bulk_create(
            AlertEmail(
                alert=alert, event_id=uuid.uuid4(), event_type="alert.raised", recipients=["ops@example.com"],
                status=status, next_attempt_at=timezone.now(),
            )
            for _ in range(count)
        )  # fmt: skip

    emails(200, DeliveryStatus.SUCCEEDED)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE observability_alertemail")
    emails(300, DeliveryStatus.PENDING)
    with transaction.atomic():
        before = index_entries_read(("alert_email_due_idx",))
        assert alert_emails_send_due(limit=8) == 8
        # The claim reads the 8 it takes from the index of pending emails; read through that index, each of the 8
        # outcomes would read all 300 as well.
        assert index_entries_read(("alert_email_due_idx",)) - before < 50
    assert len(mail.outbox) == 8
    assert AlertEmail.objects.filter(status=DeliveryStatus.SUCCEEDED).count() == 208
