"""/api/v1/alerts/: an organization's alerts and the system-wide ones, filtered and paged; acknowledging one is
audited, idempotent, refused (409) once it is resolved, and left to the admin for system-wide alerts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from echoflow.accounts.models import Organization
from echoflow.audit.models import AuditEntry
from echoflow.observability.models import Alert, AlertRule
from echoflow.observability.services import (
    DISPATCHER_KEY,
    alert_acknowledge,
    alert_raise,
    alert_resolve,
)
from schedules.models import Schedule
from tests.test_api_helpers import (
    API,
    _fresh_rate_limits,  # noqa: F401
    client_for,
    failing_alert,
    make_schedule,
)

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


@pytest.fixture
def operator(org: Organization) -> APIClient:
    return client_for(org, "operator")


def _failing(schedule: Schedule, *, minutes: int = 0) -> Alert:
    return failing_alert(
        schedule,
        detail={"schedule": schedule.pk, "consecutive_failures": 3, "last_error": "HTTP 503"},
        now=T0 + timedelta(minutes=minutes),
    )


def _stalled(*, minutes: int = 0) -> Alert:
    alert = alert_raise(
        rule=AlertRule.DISPATCHER_STALLED,
        key=DISPATCHER_KEY,
        title="The dispatcher has not ticked for 95 s (limit 30 s)",
        now=T0 + timedelta(minutes=minutes),
    )
    assert alert is not None
    return alert


def _ids(response: Any) -> list[int]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


def test_an_organization_sees_its_alerts_and_the_system_wide_ones_newest_first(
    org: Organization, other_org: Organization, operator: APIClient
) -> None:
    nightly = make_schedule(org, "nightly")
    hourly = make_schedule(org, "hourly")
    first = _failing(nightly, minutes=1)
    system = _stalled(minutes=2)
    second = _failing(hourly, minutes=3)
    _failing(make_schedule(other_org, "theirs"), minutes=4)

    response = operator.get(f"{API}/alerts/")
    assert _ids(response) == [second.pk, system.pk, first.pk]
    body = response.json()["results"][2]
    assert body == {
        "id": first.pk,
        "rule": "consecutive_failures",
        "status": "open",
        "title": "Schedule 'nightly' failed 3 times in a row",
        "organization": org.pk,
        "schedule": nightly.pk,
        "detail": {"schedule": nightly.pk, "consecutive_failures": 3, "last_error": "HTTP 503"},
        "raised_at": "2026-11-23T08:01:00Z",
        "acknowledged_at": None,
        "acknowledged_by": None,
        "resolved_at": None,
        "resolution_note": "",
    }
    assert response.json()["results"][1]["organization"] is None


def test_alerts_filter_by_status_rule_schedule_and_time(org: Organization, operator: APIClient) -> None:
    nightly = make_schedule(org, "nightly")
    hourly = make_schedule(org, "hourly")
    acked = _failing(nightly, minutes=1)
    alert_acknowledge(alert=acked)
    resolved = _failing(hourly, minutes=2)
    alert_resolve(rule=resolved.rule, key=resolved.key, note="run 9 succeeded")
    system = _stalled(minutes=3)

    def ids(**params: Any) -> list[int]:
        return _ids(operator.get(f"{API}/alerts/", params))

    assert ids(status="open") == [system.pk]
    assert ids(status="acknowledged") == [acked.pk]
    assert ids(status="active") == [system.pk, acked.pk]
    assert ids(status="resolved") == [resolved.pk]
    assert ids(rule="dispatcher_stalled") == [system.pk]
    assert ids(schedule=hourly.pk) == [resolved.pk]
    assert ids(raised_after="2026-11-23T08:02:00Z") == [system.pk, resolved.pk]
    assert ids(raised_before="2026-11-23T10:02:00+02:00") == [acked.pk]

    refused = operator.get(f"{API}/alerts/", {"status": "closed", "rule": "x", "schedule": "abc"})
    assert refused.status_code == 400
    assert set(refused.json()["errors"]) == {"status", "rule", "schedule"}
    assert "closed is not one of the available choices" in refused.json()["errors"]["status"][0]


def test_alerts_are_paged_with_a_cursor(org: Organization, operator: APIClient) -> None:
    alerts = [_failing(make_schedule(org, f"s{i}"), minutes=i) for i in range(3)]
    page = operator.get(f"{API}/alerts/", {"page_size": 2}).json()
    assert [a["id"] for a in page["results"]] == [alerts[2].pk, alerts[1].pk]
    rest = operator.get(page["next"]).json()
    assert ([a["id"] for a in rest["results"]], rest["next"]) == ([alerts[0].pk], None)


def test_get_one_alert_and_not_another_organizations(
    org: Organization, other_org: Organization, operator: APIClient
) -> None:
    mine = _failing(make_schedule(org, "nightly"))
    theirs = _failing(make_schedule(other_org, "theirs"))
    assert operator.get(f"{API}/alerts/{mine.pk}/").json()["title"] == "Schedule 'nightly' failed 3 times in a row"
    foreign = operator.get(f"{API}/alerts/{theirs.pk}/")
    missing = operator.get(f"{API}/alerts/{10**9}/")
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json()
    assert operator.post(f"{API}/alerts/{theirs.pk}/acknowledge/").status_code == 404
    assert Alert.objects.get(pk=theirs.pk).acknowledged_at is None


def test_acknowledging_records_who_and_is_audited_once(org: Organization, operator: APIClient) -> None:
    alert = _failing(make_schedule(org, "nightly"))
    response = operator.post(f"{API}/alerts/{alert.pk}/acknowledge/", HTTP_X_REQUEST_ID="req-ack-1")
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["status"], body["acknowledged_by"], body["resolved_at"]) == ("acknowledged", "operator-acme", None)
    assert body["acknowledged_at"] is not None

    again = operator.post(f"{API}/alerts/{alert.pk}/acknowledge/")
    assert again.status_code == 200
    assert again.json()["acknowledged_at"] == body["acknowledged_at"]  # acknowledging twice changes nothing

    entry = AuditEntry.objects.get(action="alert.acknowledge")
    assert (entry.organization_id, entry.target_type, entry.target_id) == (org.pk, "alert", str(alert.pk))
    assert (entry.actor_label, entry.source, entry.request_id) == ("token:operator-0", "api", "req-ack-1")
    assert entry.changes == {"rule": "consecutive_failures", "schedule": alert.schedule_id}
    listed = operator.get(f"{API}/audit/", {"action": "alert."}).json()["results"]
    assert [row["id"] for row in listed] == [entry.pk]


def test_a_resolved_alert_cannot_be_acknowledged(org: Organization, operator: APIClient) -> None:
    alert = _failing(make_schedule(org, "nightly"))
    alert_resolve(rule=alert.rule, key=alert.key, note="run 12 succeeded")
    response = operator.post(f"{API}/alerts/{alert.pk}/acknowledge/")
    assert response.status_code == 409
    assert response.json() == {
        "detail": f"alert {alert.pk} is already resolved (run 12 succeeded); only an unresolved alert can be "
        "acknowledged",
        "code": "invalid_state",
        "errors": {},
    }
    assert not AuditEntry.objects.filter(action="alert.acknowledge").exists()


def test_system_wide_alerts_are_acknowledged_in_the_admin_not_by_one_organization(
    org: Organization, operator: APIClient
) -> None:
    system = _stalled()
    refused = operator.post(f"{API}/alerts/{system.pk}/acknowledge/")
    assert refused.status_code == 403
    assert refused.json()["code"] == "permission_denied"
    assert "system-wide" in refused.json()["detail"] and "in the admin" in refused.json()["detail"]
    assert Alert.objects.get(pk=system.pk).acknowledged_at is None

    # Once an operator acknowledged it, tenants see that it was, not who did.
    staff = get_user_model().objects.create_user("night-operator", is_staff=True)
    alert_acknowledge(alert=system, user=staff)
    body = operator.get(f"{API}/alerts/{system.pk}/").json()
    assert (body["status"], body["acknowledged_by"]) == ("acknowledged", None)
