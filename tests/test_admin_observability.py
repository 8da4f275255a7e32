"""The admin's observability pieces: a schedule's 24 h figures and alert rule on its page, the alert list with its
status filter and the Acknowledge action. Every write goes through the services, so it is audited."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from echoflow.accounts.models import Organization
from echoflow.audit.models import AuditEntry
from echoflow.events.bus import EventSpec, event_record
from echoflow.observability.models import ScheduleAlertRule
from echoflow.observability.processor import events_process
from echoflow.observability.services import alert_resolve
from schedules.models import Schedule
from tests.test_admin import change_form, change_url, make_schedule, messages_of
from tests.test_api_helpers import failing_alert

pytestmark = pytest.mark.django_db

ALERTS = reverse("admin:observability_alert_changelist")


def _event(schedule: Schedule, kind: str, **data: Any) -> None:
    event_record(
        EventSpec(
            type=kind, organization_id=schedule.organization_id, schedule_id=schedule.pk, run_id=1, attempt=1, data=data
        ),
        occurred_at=timezone.now() - timedelta(hours=1),
    )


# --- the schedule's page ------------------------------------------------------------------------------------------
def test_schedule_page_shows_its_24_hour_figures_read_only(admin_client: Client, org: Organization) -> None:
    schedule = make_schedule(org)
    other = make_schedule(org, "other")
    _event(schedule, "run.started", lag_ms=120)
    _event(schedule, "run.started", lag_ms=80)
    _event(schedule, "run.succeeded", duration_ms=200)
    _event(schedule, "run.failed", duration_ms=4000, error="boom")
    _event(other, "run.started", lag_ms=10)  # another schedule's: not in these figures
    events_process()

    response = admin_client.get(change_url(schedule))
    assert response.status_code == 200
    content = response.content.decode()
    assert "Last 24 hours" in content
    for label, value in (("Triggers", "2"), ("Success rate", "50.0 %"), ("Failure rate", "50.0 %")):
        assert f"<tr><th>{label}</th><td>{value}</td></tr>" in content
    assert "1 succeeded, 1 failed, 0 timed out, 0 cancelled, 0 skipped since" in content
    assert "figures_24h" not in response.context["adminform"].form.fields


def test_an_untouched_alert_rule_writes_nothing(admin_client: Client, org: Organization) -> None:
    schedule = make_schedule(org)
    page = admin_client.get(change_url(schedule)).content.decode()
    assert 'name="alert_rule-0-consecutive_failures"' in page and "default 3, ALERT_CONSECUTIVE_FAILURES" in page

    response = admin_client.post(change_url(schedule), change_form(schedule, description="for the board"))
    assert response.status_code == 302
    assert not ScheduleAlertRule.objects.exists()
    assert not AuditEntry.objects.filter(action="schedule.alert_rule").exists()


def test_the_alert_rule_is_set_and_changed_through_the_service(admin_client: Client, org: Organization) -> None:
    schedule = make_schedule(org)
    response = admin_client.post(
        change_url(schedule), change_form(schedule, **{"alert_rule-0-consecutive_failures": "1"})
    )
    assert response.status_code == 302
    rule = ScheduleAlertRule.objects.get(schedule=schedule)
    assert (rule.consecutive_failures, rule.enabled) == (1, True)
    entry = AuditEntry.objects.get(action="schedule.alert_rule")
    assert (entry.source, entry.target_id, entry.changes) == (
        "admin",
        str(schedule.pk),
        {"consecutive_failures": 1, "enabled": True},
    )

    schedule.refresh_from_db()
    data = change_form(
        schedule,
        **{"alert_rule-INITIAL_FORMS": "1", "alert_rule-0-id": str(rule.pk), "alert_rule-0-consecutive_failures": "5"},
    )
    del data["alert_rule-0-enabled"]  # unticked
    assert admin_client.post(change_url(schedule), data).status_code == 302
    rule.refresh_from_db()
    assert (rule.consecutive_failures, rule.enabled) == (5, False)
    assert AuditEntry.objects.filter(action="schedule.alert_rule").count() == 2


def test_a_threshold_below_one_is_refused_and_nothing_is_saved(admin_client: Client, org: Organization) -> None:
    schedule = make_schedule(org)
    data = change_form(schedule, description="changed", **{"alert_rule-0-consecutive_failures": "0"})
    response = admin_client.post(change_url(schedule), data)
    assert response.status_code == 200
    assert "Ensure this value is greater than or equal to 1." in response.content.decode()
    schedule.refresh_from_db()
    assert schedule.description == ""
    assert not ScheduleAlertRule.objects.exists()


def test_the_alert_rule_admin_saves_through_the_service(admin_client: Client, org: Organization) -> None:
    schedule = make_schedule(org)
    add = reverse("admin:observability_schedulealertrule_add")
    response = admin_client.post(add, {"schedule": schedule.pk, "consecutive_failures": "2", "enabled": "on"})
    assert response.status_code == 302
    assert ScheduleAlertRule.objects.get(schedule=schedule).consecutive_failures == 2
    assert AuditEntry.objects.get(action="schedule.alert_rule").source == "admin"
    refused = admin_client.post(add, {"schedule": make_schedule(org, "x").pk, "consecutive_failures": "0"})
    assert refused.status_code == 200
    assert "Ensure this value is greater than or equal to 1." in refused.content.decode()


# --- alerts -------------------------------------------------------------------------------------------------------
def test_alerts_are_listed_by_status_and_acknowledged_with_the_action(
    admin_client: Client, admin_user: User, org: Organization
) -> None:
    still_failing = failing_alert(make_schedule(org, "nightly"))
    recovered = failing_alert(make_schedule(org, "hourly"))
    alert_resolve(rule=recovered.rule, key=recovered.key, note="run 7 succeeded")

    listed = admin_client.get(ALERTS, {"status": "open"})
    assert listed.status_code == 200
    assert list(listed.context["cl"].result_list) == [still_failing]
    assert list(admin_client.get(ALERTS, {"status": "resolved"}).context["cl"].result_list) == [recovered]

    response = admin_client.post(
        ALERTS, {"action": "acknowledge", ACTION_CHECKBOX_NAME: [still_failing.pk, recovered.pk]}, follow=True
    )
    assert response.status_code == 200
    assert messages_of(response) == [
        f"Not acknowledged: alert {recovered.pk} is already resolved (run 7 succeeded); only an unresolved alert "
        "can be acknowledged.",
        "Acknowledged 1 alert(s).",
    ]
    still_failing.refresh_from_db()
    assert (still_failing.status, still_failing.acknowledged_by) == ("acknowledged", admin_user)
    entry = AuditEntry.objects.get(action="alert.acknowledge")
    assert (entry.source, entry.actor_label, entry.target_id) == ("admin", admin_user.username, str(still_failing.pk))
    assert list(admin_client.get(ALERTS, {"status": "acknowledged"}).context["cl"].result_list) == [still_failing]
