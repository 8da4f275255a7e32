"""Helpers shared by the schedules page's tests (test_page_*.py); no tests of its own."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import User
from django.utils import timezone

from echoflow.accounts.models import Organization
from echoflow.accounts.services import membership_set
from runs.models import AttemptOutcome, Run, RunAttempt, RunStatus, RunTrigger
from schedules.models import Schedule
from schedules.services import schedule_create

PASSWORD = "correct horse battery staple"
_keys = itertools.count(1)


def member(org: Organization, role: str, username: str | None = None, *, password: bool = False) -> User:
    """A user with ``role`` in ``org``; a real password only when the test signs in with it (hashing is slow)."""
    user = User.objects.create_user(username=username or f"{role}-{org.slug}", password=PASSWORD if password else None)
    membership_set(organization=org, user=user, role=role)
    return user


def htmx(target: str = "", current_url: str = "http://testserver/schedules/", trigger: str = "") -> dict[str, Any]:
    """The headers htmx sends."""
    headers: dict[str, Any] = {"HTTP_HX_REQUEST": "true", "HTTP_HX_CURRENT_URL": current_url}
    if target:
        headers["HTTP_HX_TARGET"] = target
    if trigger:
        headers["HTTP_HX_TRIGGER"] = trigger
    return headers


def make_schedule(org: Organization, name: str = "nightly export", **fields: Any) -> Schedule:
    data: dict[str, Any] = {
        "name": name,
        "trigger_kind": "cron",
        "cron": "0 3 * * *",
        "timezone": "UTC",
        "action_name": "echoflow.echo",
        "payload": {"hello": "world"},
    }
    data.update(fields)
    return schedule_create(organization=org, data=data)


def make_run(
    org: Organization,
    schedule: Schedule | None,
    *,
    status: str = RunStatus.SUCCEEDED,
    created_at: datetime | None = None,
    took: timedelta = timedelta(seconds=2),
    attempts: list[tuple[str, str, Any]] | None = None,
    action_name: str = "echoflow.echo",
    payload: Any = None,
) -> Run:
    """A run as the executor would have left it; ``attempts`` is [(outcome, error, output)]."""
    now = created_at or timezone.now()
    final = status in {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELLED}
    started = status not in {RunStatus.QUEUED, RunStatus.WAITING}
    run = Run.objects.create(
        organization=org,
        schedule=schedule,
        idempotency_key=f"test:{next(_keys)}",
        trigger=RunTrigger.SCHEDULE if schedule else RunTrigger.API,
        slot=now if schedule else None,
        due_at=now,
        status=status,
        attempts=len(attempts or []),
        max_attempts=3,
        action_kind="python",
        action_name=action_name,
        payload=payload if payload is not None else {"n": 1},
        started_at=now if started else None,
        finished_at=now + took if final else None,
        error=next((e for _, e, _ in reversed(attempts or []) if e), ""),
    )
    # created_at is auto_now_add; set it afterwards so "newest first" and the 24 h window can be tested.
    Run.objects.filter(pk=run.pk).update(created_at=now)
    for number, (outcome, error, output) in enumerate(attempts or [], start=1):
        RunAttempt.objects.create(
            run=run,
            number=number,
            started_at=now,
            finished_at=None if outcome == AttemptOutcome.RUNNING else now + took,
            outcome=outcome,
            error=error,
            output=output,
            duration_ms=None if outcome == AttemptOutcome.RUNNING else int(took.total_seconds() * 1000),
        )
    run.refresh_from_db()
    return run
