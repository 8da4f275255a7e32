"""Reads about runs."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import F, QuerySet
from django.utils import timezone

from runs.models import DispatcherHeartbeat, Run


def run_list(*, organization_id: int) -> QuerySet[Run]:
    """The organization's runs, each with ``schedule_name`` (None for ad-hoc runs and deleted schedules).

    The name is one column of a join: a page of runs does not load (and decode the JSON of) a Schedule per run."""
    return Run.objects.filter(organization_id=organization_id).annotate(schedule_name=F("schedule__name"))


def runs_of_schedule(*, schedule_id: int, limit: int = 20) -> QuerySet[Run]:
    return Run.objects.filter(schedule_id=schedule_id).order_by("-created_at", "-id")[:limit]


def dispatcher_heartbeat_age(*, now: datetime | None = None) -> timedelta | None:
    """How long ago the dispatcher last ticked, or None if it never has."""
    beat = DispatcherHeartbeat.objects.filter(name="dispatcher").values_list("beat_at", flat=True).first()
    if beat is None:
        return None
    return (now or timezone.now()) - beat
