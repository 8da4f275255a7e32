"""Alerts: N failed runs in a row of a schedule, and the dispatcher stalled. Each is raised once, stays open until
its condition clears, and is delivered as alert.raised/alert.resolved events and by email."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core import mail

from echoflow.accounts.models import Organization
from echoflow.events.models import OutboxEvent
from echoflow.observability.delivery import alert_emails_send_due
from echoflow.observability.models import Alert, AlertEmail, AlertRule, DeliveryStatus, FailureStreak
from echoflow.observability.processor import events_process
from echoflow.observability.selectors import AlertCounts, alert_counts, alert_get, alerts_list
from echoflow.observability.services import (
    AlertStateError,
    alert_acknowledge,
    dispatcher_alert_check,
    schedule_alert_rule_set,
)
from echoflow.observability.tasks import check_alerts
from runs.executor import run_execute
from runs.models import DispatcherHeartbeat, Run, RunStatus
from runs.services import schedule_run_now
from schedules.models import Schedule
from schedules.services import schedule_create

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _schedule(org: Organization, name: str = "nightly report") -> Schedule:
    return schedule_create(
        organization=org,
        data={
            "name": name,
            "trigger_kind": "cron",
            "cron": "0 0 1 1 *",
            "action_name": "echoflow.fail",
            "payload": {"message": "the report server is down", "permanent": True},
            "max_attempts": 1,
        },
    )


def _run(schedule: Schedule, *, succeed: bool = False) -> Run:
    Schedule.objects.filter(pk=schedule.pk).update(action_name="echoflow.noop" if succeed else "echoflow.fail")
    schedule.refresh_from_db()
    run, _ = schedule_run_now(schedule=schedule)
    run_execute(run_id=run.pk, worker="w")
    run.refresh_from_db()
    assert run.status == (RunStatus.SUCCEEDED if succeed else RunStatus.FAILED)
    return run


def _alert_events(kind: str) -> list[OutboxEvent]:
    return list(OutboxEvent.objects.filter(type=f"alert.{kind}").order_by("id"))


def test_three_failed_runs_raise_one_alert_that_the_next_success_resolves(org: Organization, settings: Any) -> None:
    settings.ALERT_EMAIL_TO = ["ops@example.com"]
    schedule = _schedule(org)
    _run(schedule)
    _run(schedule)
    events_process()
    assert not Alert.objects.exists()
    assert FailureStreak.objects.get(schedule_id=schedule.pk).failures == 2

    last = _run(schedule)
    assert events_process().alerts_raised == 1
    alert = Alert.objects.get()
    assert (alert.rule, alert.status, alert.organization_id, alert.schedule_id) == (
        AlertRule.CONSECUTIVE_FAILURES,
        "open",
        org.pk,
        schedule.pk,
    )
    assert alert.title == "Schedule 'nightly report' failed 3 times in a row"
    assert alert.detail["last_run"] == last.pk and "report server is down" in alert.detail["last_error"]
    raised = _alert_events("raised")
    assert len(raised) == 1
    assert raised[0].data["alert"] == alert.pk
    assert raised[0].organization_id == org.pk and raised[0].schedule_id == schedule.pk

    # Still failing: the same alert, not a second one, and no second event.
    _run(schedule)
    events_process()
    assert Alert.objects.count() == 1 and len(_alert_events("raised")) == 1
    alert.refresh_from_db()
    assert alert.detail["consecutive_failures"] == 4

    # The alert.raised event is read by the processor: one email to ALERT_EMAIL_TO.
    assert alert_emails_send_due() == 1
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["ops@example.com"]
    assert mail.outbox[0].subject == "[EchoFlow] Alert: Schedule 'nightly report' failed 3 times in a row"

    good = _run(schedule, succeed=True)
    assert events_process().alerts_resolved == 1
    alert.refresh_from_db()
    assert alert.status == "resolved" and alert.resolution_note == f"run {good.pk} succeeded"
    assert [e.data["status"] for e in _alert_events("resolved")] == ["resolved"]
    assert FailureStreak.objects.get(schedule_id=schedule.pk).failures == 0
    events_process()
    assert alert_emails_send_due() == 1
    assert mail.outbox[1].subject == "[EchoFlow] Resolved: Schedule 'nightly report' failed 3 times in a row"
    assert "run " in mail.outbox[1].body and "succeeded" in mail.outbox[1].body

    # A new streak after the resolution is a new incident.
    for _ in range(3):
        _run(schedule)
    events_process()
    assert Alert.objects.filter(resolved_at__isnull=True).count() == 1
    assert Alert.objects.count() == 2


def test_the_threshold_is_per_schedule_and_can_be_turned_off(org: Organization) -> None:
    eager = _schedule(org, "eager")
    quiet = _schedule(org, "quiet")
    schedule_alert_rule_set(schedule=eager, consecutive_failures=1)
    schedule_alert_rule_set(schedule=quiet, consecutive_failures=1, enabled=False)
    _run(eager)
    _run(quiet)
    _run(quiet)
    events_process()
    assert [a.schedule_id for a in Alert.objects.all()] == [eager.pk]


def test_cancelled_runs_neither_break_nor_extend_a_streak_and_deleting_the_schedule_resolves(
    org: Organization,
) -> None:
    from runs.services import run_cancel
    from schedules.services import schedule_delete

    schedule = _schedule(org)
    _run(schedule)
    _run(schedule)
    run_cancel(run=schedule_run_now(schedule=schedule)[0])
    _run(schedule)
    events_process()
    alert = Alert.objects.get()
    assert alert.detail["consecutive_failures"] == 3

    schedule_delete(schedule=schedule)
    events_process()
    alert.refresh_from_db()
    assert alert.status == "resolved" and alert.resolution_note == "the schedule was deleted"


def test_a_stalled_dispatcher_raises_one_alert_until_the_heartbeat_returns(settings: Any) -> None:
    settings.ALERT_DISPATCHER_STALE_SECONDS = 30
    assert dispatcher_alert_check(now=NOW) is None  # never ran: a fresh install is not "stalled"
    DispatcherHeartbeat.objects.create(name="dispatcher", beat_at=NOW - timedelta(seconds=20))
    assert dispatcher_alert_check(now=NOW) is None

    later = NOW + timedelta(seconds=15)  # 35 s without a tick
    assert dispatcher_alert_check(now=later) == "raised"
    assert dispatcher_alert_check(now=later + timedelta(seconds=10)) is None  # raised once
    alert = Alert.objects.get()
    assert (alert.rule, alert.key, alert.organization_id, alert.status) == (
        AlertRule.DISPATCHER_STALLED,
        "dispatcher",
        None,
        "open",
    )
    assert alert.title == "The dispatcher has not ticked for 35 s (limit 30 s)"
    assert [e.organization_id for e in _alert_events("raised")] == [None]

    DispatcherHeartbeat.objects.filter(name="dispatcher").update(beat_at=later + timedelta(seconds=9))
    assert dispatcher_alert_check(now=later + timedelta(seconds=10)) == "resolved"
    alert.refresh_from_db()
    assert alert.status == "resolved" and alert.resolution_note.startswith("the dispatcher ticked again")
    assert len(_alert_events("resolved")) == 1
    assert dispatcher_alert_check(now=later + timedelta(seconds=10)) is None


def test_the_periodic_check_task_raises_the_dispatcher_alert(settings: Any) -> None:
    DispatcherHeartbeat.objects.create(name="dispatcher", beat_at=datetime.now(UTC) - timedelta(minutes=5))
    assert check_alerts() == "raised"
    assert Alert.objects.filter(rule=AlertRule.DISPATCHER_STALLED, resolved_at__isnull=True).count() == 1


def test_acknowledging_keeps_the_alert_open_until_resolved(org: Organization, other_org: Organization) -> None:
    user = get_user_model().objects.create_user("ann", password="x")
    schedule = _schedule(org)
    schedule_alert_rule_set(schedule=schedule, consecutive_failures=1)
    _run(schedule)
    events_process()
    alert = Alert.objects.get()
    DispatcherHeartbeat.objects.create(name="dispatcher", beat_at=NOW - timedelta(minutes=5))
    dispatcher_alert_check(now=NOW)
    system = Alert.objects.get(rule=AlertRule.DISPATCHER_STALLED)

    acked = alert_acknowledge(alert=alert, user=user)
    assert (acked.status, acked.acknowledged_by_id) == ("acknowledged", user.pk)
    assert alert_acknowledge(alert=alert, user=user).acknowledged_at == acked.acknowledged_at  # idempotent
    assert list(alerts_list(organization=org, status="open")) == [system]
    assert list(alerts_list(organization=org, status="acknowledged")) == [acked]
    assert set(alerts_list(organization=org, status="active")) == {acked, system}
    assert alert_counts(organization=org) == AlertCounts(open=1, acknowledged=1)
    assert alert_counts(organization=other_org) == AlertCounts(open=1, acknowledged=0)  # the system-wide one

    # Another organization sees only the system-wide alert; acknowledging goes through alert_get(include_system=False).
    assert list(alerts_list(organization=other_org)) == [system]
    with pytest.raises(Alert.DoesNotExist):
        alert_get(organization=other_org, alert_id=alert.pk)
    with pytest.raises(Alert.DoesNotExist):
        alert_get(organization=org, alert_id=system.pk, include_system=False)

    _run(schedule, succeed=True)
    events_process()
    assert list(alerts_list(organization=org, status="resolved")) == [alert]
    assert alert_counts(organization=org) == AlertCounts(open=1, acknowledged=0)
    with pytest.raises(AlertStateError, match="already resolved"):
        alert_acknowledge(alert=alert, user=user)


def test_an_email_that_cannot_be_sent_is_recorded_and_retried(org: Organization, settings: Any) -> None:
    settings.ALERT_EMAIL_TO = ["ops@example.com"]
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 1, 2  # nothing listens there
    schedule = _schedule(org)
    schedule_alert_rule_set(schedule=schedule, consecutive_failures=1)
    _run(schedule)
    events_process()
    events_process()
    assert alert_emails_send_due() == 1
    email = AlertEmail.objects.get()
    assert (email.status, email.attempts) == (DeliveryStatus.PENDING, 1)
    assert "Connection" in email.last_error or "refused" in email.last_error
    assert email.next_attempt_at is not None and email.next_attempt_at > datetime.now(UTC)
    assert alert_emails_send_due() == 0  # not due again before its backoff
