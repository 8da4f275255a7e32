"""Shared pieces of the API tests (imported by the tests/test_api_*.py modules; holds no tests itself)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, User
from django.core.cache import cache
from django.utils import timezone
from rest_framework.test import APIClient

from echoflow.accounts.models import Organization
from echoflow.accounts.services import membership_set, token_create
from echoflow.audit.models import AuditEntry
from echoflow.events.models import OutboxEvent
from echoflow.observability.models import Alert, AlertRule
from echoflow.observability.services import alert_raise, schedule_alert_key
from runs.models import Run, RunAttempt, RunStatus
from runs.services import run_create_adhoc, schedule_run_now
from schedules.models import Schedule
from schedules.services import schedule_create

API = "/api/v1"
ROLES = ("viewer", "operator", "editor", "admin")


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> Iterator[None]:
    """Throttle counters live in the cache (this run's own Redis database); token ids repeat between runs."""
    cache.clear()
    yield
    cache.clear()


def user_in(org: Organization, role: str, username: str | None = None) -> User:
    name = username or f"{role}-{org.slug}"
    user = get_user_model().objects.filter(username=name).first()
    if user is None:
        # No password: hashing one costs a quarter of a second, and tokens do not need it.
        user = get_user_model().objects.create_user(name, email=f"{name}@example.com")
    membership_set(organization=org, user=user, role=role)
    return user


def token_for(user: AbstractBaseUser, org: Organization, *, scopes: list[str] | None = None, name: str = "") -> str:
    _, plaintext = token_create(
        user=user, organization=org, name=name or f"{user.get_username()}-token", scopes=scopes or []
    )
    return plaintext


def client_with(plaintext: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    return client


def client_for(org: Organization, role: str, *, scopes: list[str] | None = None) -> APIClient:
    user = user_in(org, role)
    return client_with(token_for(user, org, scopes=scopes, name=f"{role}-{len(scopes or [])}"))


def row_counts() -> tuple[int, int, int, int]:
    """Schedules, runs, audit entries and events: a rejected request must change none of them."""
    return Schedule.objects.count(), Run.objects.count(), AuditEntry.objects.count(), OutboxEvent.objects.count()


def error_fields(response: Any) -> dict[str, list[str]]:
    """The ``errors`` of an error response in the API's envelope, by field."""
    body = response.json()
    assert set(body) >= {"detail", "code", "errors"}, body
    return dict(body["errors"])


def schedule_data(name: str = "nightly", **extra: Any) -> dict[str, Any]:
    return {"name": name, "trigger_kind": "cron", "cron": "0 2 * * *", "action_name": "echoflow.noop", **extra}


def make_schedule(org: Organization, name: str = "nightly", **extra: Any) -> Schedule:
    return schedule_create(organization=org, data=schedule_data(name, **extra))


def queued_run(org: Organization, schedule: Schedule | None = None) -> Run:
    run, _ = schedule_run_now(schedule=schedule or make_schedule(org, f"for-run-{Run.objects.count()}"))
    return run


def failing_alert(schedule: Schedule, **extra: Any) -> Alert:
    """An open consecutive-failures alert about ``schedule``, as the alert rules raise it."""
    alert = alert_raise(
        rule=AlertRule.CONSECUTIVE_FAILURES,
        key=schedule_alert_key(schedule.pk),
        title=f"Schedule '{schedule.name}' failed 3 times in a row",
        organization_id=schedule.organization_id,
        schedule_id=schedule.pk,
        **extra,
    )
    assert alert is not None
    return alert


def run_in(org: Organization, status: str, **fields: Any) -> Run:
    """A run of a fresh schedule, moved to ``status`` directly (as the executor would have left it)."""
    run = queued_run(org)
    Run.objects.filter(pk=run.pk).update(status=status, **fields)
    run.refresh_from_db()
    return run


def running_event_run(org: Organization, *, max_attempts: int = 1) -> Run:
    """An event run an external executor is working on: running, attempt 1 open."""
    run, _ = run_create_adhoc(
        organization=org, action_kind="event", action_name="reports.build", max_attempts=max_attempts
    )
    now = timezone.now()
    Run.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, attempts=1, started_at=now, heartbeat_at=now)
    RunAttempt.objects.create(run=run, number=1, started_at=now, worker="external")
    run.refresh_from_db()
    return run
