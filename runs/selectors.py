"""Reads about runs."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from runs.models import DispatcherHeartbeat, Run


def runs_of_schedule(*, schedule_id: int, limit: int = 20) -> QuerySet[Run]:
    return Run.objects.filter(schedule_id=schedule_id).order_by("-created_at", "-id")[:limit]


def dispatcher_heartbeat_age(*, now: datetime | None = None) -> timedelta | None:
    """How long ago the dispatcher last ticked, or None if it never has."""
    beat = DispatcherHeartbeat.objects.filter(name="dispatcher").values_list("beat_at", flat=True).first()
    if beat is None:
        return None
    return (now or timezone.now()) - beat


def dispatcher_is_healthy(*, now: datetime | None = None) -> tuple[bool, str]:
    age = dispatcher_heartbeat_age(now=now)
    limit = settings.ECHOFLOW["HEARTBEAT_STALE_SECONDS"]
    if age is None:
        return False, "the dispatcher has never run"
    seconds = age.total_seconds()
    if seconds > limit:
        return False, f"the dispatcher's last heartbeat was {seconds:.0f} s ago (limit {limit} s)"
    return True, f"the dispatcher ticked {seconds:.1f} s ago"
