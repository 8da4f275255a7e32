"""Reads about schedules."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import QuerySet
from django.utils import timezone

from echoflow.accounts.models import Organization
from schedules.models import Schedule
from schedules.triggers import Trigger


def schedule_list(*, organization: Organization | None = None) -> QuerySet[Schedule]:
    query = Schedule.objects.select_related("organization")
    if organization is not None:
        query = query.filter(organization=organization)
    return query.order_by("organization__name", "name")


def schedules_of_organization(*, organization: Organization) -> QuerySet[Schedule]:
    """One organization's schedules, without joining the organization row: a page of them needs nothing of it."""
    return Schedule.objects.filter(organization=organization).order_by("name", "id")


def schedule_preview(*, trigger: Trigger, count: int, after: datetime | None = None) -> list[datetime]:
    """The next ``count`` slots strictly after ``after``: the dispatcher's own arithmetic."""
    return trigger.preview(after=after or timezone.now(), count=count)


def schedule_upcoming(*, schedule: Schedule, count: int, after: datetime | None = None) -> list[datetime]:
    """The next ``count`` slots a saved schedule will really run: none when it is not active, and no more than
    its remaining ``max_runs``."""
    if schedule.state != "active" or schedule.next_run_at is None:
        return []
    if schedule.max_runs is not None:
        count = min(count, max(schedule.max_runs - schedule.runs_count, 0))
    if count <= 0:
        return []
    after = after or timezone.now()
    # Slots not yet dispatched (next_run_at may be slightly in the past) come first.
    start = min(after, schedule.next_run_at - timedelta(microseconds=1))
    return schedule.trigger.preview(after=start, count=count)


def schedule_find(*, ref: str, organization: Organization | None = None) -> Schedule:
    """A schedule by id or by name (names are unique per organization)."""
    query = Schedule.objects.all()
    if organization is not None:
        query = query.filter(organization=organization)
    if ref.isdigit():
        return query.get(pk=int(ref))
    matches = list(query.filter(name=ref)[:2])
    if len(matches) != 1:
        raise Schedule.DoesNotExist(
            f"no schedule named {ref!r}" if not matches else f"{ref!r} names schedules in several organizations"
        )
    return matches[0]
