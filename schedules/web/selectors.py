"""Reads for the schedules page: the filtered, sorted table, the 24 h tiles and the run log."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from django.core.paginator import Page, Paginator
from django.db import connection
from django.db.models import (
    Aggregate,
    Case,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    FloatField,
    IntegerField,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Cast, Coalesce

from echoflow.accounts.models import Organization
from echoflow.observability.selectors import alert_counts
from runs.models import FINAL_STATUSES, Run, RunAttempt, RunStatus
from schedules.models import Schedule, ScheduleState

WINDOW = timedelta(hours=24)
PAGE_SIZE = 25
RUN_LOG_SIZE = 20
# A run "finished" for the success rate when it ended with a verdict; cancelled and skipped runs say nothing
# about whether the action works.
VERDICT_STATUSES = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.TIMED_OUT)
ACTIVE_STATUSES = tuple(sorted(set(RunStatus.values) - set(FINAL_STATUSES)))

SORTS: dict[str, tuple[Any, ...]] = {
    "name": (F("name").asc(),),
    "-name": (F("name").desc(),),
    "agent": (F("agent").asc(), F("name").asc()),
    "-agent": (F("agent").desc(), F("name").asc()),
    "state": (F("state").asc(), F("name").asc()),
    "-state": (F("state").desc(), F("name").asc()),
    "next_run": (F("next_run_at").asc(nulls_last=True), F("name").asc()),
    "-next_run": (F("next_run_at").desc(nulls_last=True), F("name").asc()),
    "last_run": (F("last_run_at").asc(nulls_last=True), F("name").asc()),
    "-last_run": (F("last_run_at").desc(nulls_last=True), F("name").asc()),
    "success": (F("success_rate_24h").asc(nulls_last=True), F("name").asc()),
    "-success": (F("success_rate_24h").desc(nulls_last=True), F("name").asc()),
}


@dataclass(frozen=True)
class TableQuery:
    """What the table shows; every field lives in the URL, so a refresh or a shared link shows the same view."""

    state: str = ""
    agent: str = ""
    q: str = ""
    sort: str = "name"
    page: int = 1

    @classmethod
    def from_params(cls, params: Any) -> TableQuery:
        state = params.get("state", "")
        sort = params.get("sort", "name")
        try:
            page = max(int(params.get("page", 1)), 1)
        except (TypeError, ValueError):
            page = 1
        return cls(
            state=state if state in ScheduleState.values else "",
            agent=params.get("agent", "")[:100],
            q=params.get("q", "").strip()[:200],
            sort=sort if sort in SORTS else "name",
            page=page,
        )

    def params(self) -> dict[str, str]:
        """The non-default parts, for URLs."""
        out: dict[str, str] = {}
        if self.state:
            out["state"] = self.state
        if self.agent:
            out["agent"] = self.agent
        if self.q:
            out["q"] = self.q
        if self.sort != "name":
            out["sort"] = self.sort
        if self.page != 1:
            out["page"] = str(self.page)
        return out

    @property
    def filtered(self) -> bool:
        return bool(self.state or self.agent or self.q)

    def with_page(self, page: int) -> TableQuery:
        return replace(self, page=page)

    def with_sort(self, sort: str) -> TableQuery:
        return replace(self, sort=sort, page=1)


def _count_runs(since: datetime, statuses: tuple[str, ...]) -> Coalesce:
    counted = (
        Run.objects.filter(schedule_id=OuterRef("pk"), finished_at__gte=since, status__in=statuses)
        .order_by()
        .values("schedule_id")
        .annotate(n=Count("id"))
        .values("n")
    )
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


def schedule_table(*, organization: Organization, query: TableQuery, now: datetime) -> Page[Any]:
    """One page of the organization's schedules, filtered and sorted, each with its 24 h verdict counts."""
    since = now - WINDOW
    schedules: QuerySet[Schedule] = Schedule.objects.filter(organization=organization)
    if query.state:
        schedules = schedules.filter(state=query.state)
    if query.agent:
        schedules = schedules.filter(agent=query.agent)
    if query.q:
        schedules = schedules.filter(
            Q(name__icontains=query.q)
            | Q(description__icontains=query.q)
            | Q(agent__icontains=query.q)
            | Q(action_name__icontains=query.q)
        )
    schedules = schedules.annotate(
        finished_24h=_count_runs(since, VERDICT_STATUSES),
        succeeded_24h=_count_runs(since, (RunStatus.SUCCEEDED,)),
    ).annotate(
        success_rate_24h=Case(
            When(finished_24h__gt=0, then=Cast("succeeded_24h", FloatField()) / Cast("finished_24h", FloatField())),
            default=Value(None, output_field=FloatField()),
            output_field=FloatField(),
        )
    )
    schedules = schedules.order_by(*SORTS[query.sort], "pk")
    paginator = Paginator(schedules, PAGE_SIZE)
    return paginator.get_page(query.page)


def schedule_agents(*, organization: Organization) -> list[str]:
    return list(
        Schedule.objects.filter(organization=organization)
        .exclude(agent="")
        .order_by("agent")
        .values_list("agent", flat=True)
        .distinct()
    )


def schedule_count(*, organization: Organization) -> int:
    return Schedule.objects.filter(organization=organization).count()


# --- 24 h tiles -----------------------------------------------------------------------------------------------------
class _Percentile(Aggregate):
    """PostgreSQL's percentile_cont (linear interpolation between the two nearest ranks)."""

    function = "PERCENTILE_CONT"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression: Any, *, fraction: float) -> None:
        super().__init__(expression, fraction=float(fraction), output_field=DurationField())


def _percentile_in_python(values: list[timedelta], fraction: float) -> timedelta | None:
    """The same interpolation as percentile_cont, for SQLite (the embedded default)."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Tiles:
    triggers: int
    finished: int
    succeeded: int
    p95: timedelta | None
    open_alerts: int  # now, not over the window: raised, neither acknowledged nor resolved
    acknowledged_alerts: int  # someone is on it, the condition has not cleared yet


def page_tiles(*, organization: Organization, now: datetime) -> Tiles:
    """The last 24 h of one organization: runs created, success rate and p95 duration of finished runs; and its
    alerts now (its own and the system-wide ones), by whether someone acknowledged them."""
    since = now - WINDOW
    runs = Run.objects.filter(organization=organization)
    triggers = runs.filter(created_at__gte=since).count()
    verdicts = runs.filter(finished_at__gte=since, status__in=VERDICT_STATUSES)
    finished = verdicts.count()
    succeeded = verdicts.filter(status=RunStatus.SUCCEEDED).count()
    timed = verdicts.filter(started_at__isnull=False).annotate(
        took=ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
    )
    p95: timedelta | None
    if connection.vendor == "postgresql":
        p95 = timed.aggregate(p95=_Percentile(F("took"), fraction=0.95))["p95"]
    else:
        p95 = _percentile_in_python(list(timed.values_list("took", flat=True)[:50_000]), 0.95)
    alerts = alert_counts(organization=organization)
    return Tiles(
        triggers=triggers,
        finished=finished,
        succeeded=succeeded,
        p95=p95,
        open_alerts=alerts.open,
        acknowledged_alerts=alerts.acknowledged,
    )


# --- run log --------------------------------------------------------------------------------------------------------
def _with_attempts(runs: QuerySet[Run]) -> QuerySet[Run]:
    return runs.prefetch_related(Prefetch("attempt_log", queryset=RunAttempt.objects.order_by("number")))


def run_log(*, schedule: Schedule, limit: int = RUN_LOG_SIZE) -> list[Run]:
    """The schedule's latest runs, newest first, each with every attempt."""
    return list(_with_attempts(Run.objects.filter(schedule=schedule).order_by("-created_at", "-id"))[:limit])


def adhoc_run_log(*, organization: Organization, limit: int = RUN_LOG_SIZE) -> list[Run]:
    """The organization's latest runs without a schedule (ad-hoc runs, and runs of deleted schedules)."""
    runs = Run.objects.filter(organization=organization, schedule__isnull=True).order_by("-created_at", "-id")
    return list(_with_attempts(runs)[:limit])


def run_counts(*, schedule: Schedule) -> dict[str, int]:
    """Runs of the schedule by status, for the run log's header."""
    rows = Run.objects.filter(schedule=schedule).order_by().values_list("status").annotate(n=Count("id"))
    return dict(rows)


def unique_schedule_name(*, organization: Organization, base: str) -> str:
    """``base``, or ``base 2``, ``base 3``…: the first name not taken in the organization (names are unique)."""
    base = base[:190]
    taken = set(
        Schedule.objects.filter(organization=organization, name__startswith=base).values_list("name", flat=True)
    )
    if base not in taken:
        return base
    number = 2
    while f"{base} {number}" in taken:
        number += 1
    return f"{base} {number}"
