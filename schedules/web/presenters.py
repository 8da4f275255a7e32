"""What the templates show, computed once in Python: rows of the table, the run log, the tiles, the editor."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.urls import reverse

from echoflow.accounts.models import Organization
from runs.models import FINAL_STATUSES, Run, RunAttempt, RunStatus
from schedules.models import Schedule, ScheduleState
from schedules.web import selectors
from schedules.web.access import PageAccess
from schedules.web.formatting import (
    duration_words,
    iso,
    local_time,
    percent,
    relative,
    trigger_words,
    zone_names,
    zone_or_utc,
)
from schedules.web.forms import GROUPS, FieldSpec, action_names, field_message
from schedules.web.preview import editor_preview
from schedules.web.responses import index_url, with_panel

SORT_COLUMNS = (
    ("name", "Name"),
    ("agent", "Agent"),
    (None, "Trigger"),
    ("state", "State"),
    ("next_run", "Next run"),
    ("last_run", "Last run"),
    ("success", "24 h success"),
)
RETRYABLE = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELLED})


def schedule_trigger_words(schedule: Schedule) -> str:
    return trigger_words(
        kind=schedule.trigger_kind,
        timezone=schedule.timezone,
        cron=schedule.cron,
        interval_seconds=schedule.interval_seconds,
        run_at=schedule.run_at,
        end_at=schedule.end_at,
        max_runs=schedule.max_runs,
    )


@dataclass(frozen=True)
class ScheduleRow:
    schedule: Schedule
    trigger: str
    next_local: str
    next_relative: str
    next_iso: str
    last_label: str
    last_relative: str
    last_iso: str
    success: str
    success_detail: str
    panel_href: str


def schedule_row(schedule: Schedule, *, now: datetime, params: dict[str, str]) -> ScheduleRow:
    zone = zone_or_utc(schedule.timezone)
    finished = getattr(schedule, "finished_24h", None)
    succeeded = getattr(schedule, "succeeded_24h", None)
    if finished is None or succeeded is None:
        finished = succeeded = 0
    next_at = schedule.next_run_at if schedule.state == ScheduleState.ACTIVE else None
    return ScheduleRow(
        schedule=schedule,
        trigger=schedule_trigger_words(schedule),
        next_local=local_time(next_at, zone) if next_at else "",
        next_relative=relative(next_at, now) if next_at else "",
        next_iso=iso(next_at),
        last_label=RunStatus(schedule.last_run_status).label if schedule.last_run_status in RunStatus.values else "",
        last_relative=relative(schedule.last_run_at, now) if schedule.last_run_at else "",
        last_iso=iso(schedule.last_run_at),
        success=percent(succeeded, finished),
        success_detail=f"{succeeded} of {finished} finished runs" if finished else "no finished runs in 24 h",
        panel_href=index_url(with_panel(params, schedule_id=schedule.pk)),
    )


def base_params(access: PageAccess, query: selectors.TableQuery | None = None) -> dict[str, str]:
    params = {"org": access.organization.slug}
    if query is not None:
        params.update(query.params())
    return params


def table_context(access: PageAccess, query: selectors.TableQuery, *, now: datetime) -> dict[str, Any]:
    page = selectors.schedule_table(organization=access.organization, query=query, now=now)
    params = base_params(access, query)
    headers = []
    for key, label in SORT_COLUMNS:
        if key is None:
            headers.append({"label": label, "sortable": False})
            continue
        current = query.sort.lstrip("-") == key
        descending = query.sort.startswith("-")
        next_sort = f"-{key}" if current and not descending else key
        headers.append(
            {
                "label": label,
                "sortable": True,
                "aria_sort": ("descending" if descending else "ascending") if current else "none",
                "href": index_url(base_params(access, query.with_sort(next_sort))),
                "current": current,
                "descending": descending,
            }
        )
    return {
        "access": access,
        "query": query,
        "page": page,
        "rows": [schedule_row(s, now=now, params=params) for s in page.object_list],
        "headers": headers,
        "table_url": index_url(params),
        "prev_url": index_url(base_params(access, query.with_page(page.number - 1))) if page.has_previous() else "",
        "next_url": index_url(base_params(access, query.with_page(page.number + 1))) if page.has_next() else "",
        "clear_url": index_url({"org": access.organization.slug}),
        "has_any": query.filtered and selectors.schedule_count(organization=access.organization) > 0,
        "run_key": uuid.uuid4().hex,
    }


def tiles_context(organization: Organization, *, now: datetime) -> dict[str, Any]:
    tiles = selectors.page_tiles(organization=organization, now=now)
    return {
        "tiles": tiles,
        "success": percent(tiles.succeeded, tiles.finished),
        "p95": duration_words(tiles.p95) or "—",
        "tiles_url": reverse("schedules_web:tiles") + f"?org={organization.slug}",
    }


# --- run log ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AttemptRow:
    attempt: RunAttempt
    started: str
    duration: str
    output: str


@dataclass(frozen=True)
class RunRow:
    run: Run
    slot: str
    due: str
    started: str
    started_iso: str
    duration: str
    error_line: str
    attempts: list[AttemptRow]
    output: str
    is_final: bool
    can_retry: bool
    can_cancel: bool
    is_open: bool


def _json(value: Any) -> str:
    return "" if value is None else json.dumps(value, indent=2, ensure_ascii=False)


def run_row(run: Run, *, zone_name: str, now: datetime, open_ids: set[int]) -> RunRow:
    zone = zone_or_utc(zone_name)
    if run.started_at and run.finished_at:
        duration = duration_words(run.finished_at - run.started_at)
    elif run.started_at and run.status == RunStatus.RUNNING:
        duration = f"{duration_words(now - run.started_at)} so far"
    else:
        duration = ""
    first_error = run.error.strip().splitlines()[0] if run.error.strip() else ""
    attempts = [
        AttemptRow(
            attempt=attempt,
            started=local_time(attempt.started_at, zone, seconds=True),
            duration=duration_words(timedelta(milliseconds=attempt.duration_ms))
            if attempt.duration_ms is not None
            else f"{duration_words(now - attempt.started_at)} so far",
            output=_json(attempt.output),
        )
        for attempt in run.attempt_log.all()
    ]
    return RunRow(
        run=run,
        slot=local_time(run.slot, zone, seconds=True) if run.slot else "",
        due=local_time(run.due_at, zone, seconds=True),
        started=local_time(run.started_at, zone, seconds=True) if run.started_at else "",
        started_iso=iso(run.started_at),
        duration=duration,
        error_line=first_error[:160] + ("…" if len(first_error) > 160 else ""),
        attempts=attempts,
        output=_json(run.output),
        is_final=run.status in FINAL_STATUSES,
        can_retry=run.status in RETRYABLE,
        can_cancel=run.status not in FINAL_STATUSES,
        is_open=run.pk in open_ids,
    )


def panel_context(
    access: PageAccess,
    *,
    schedule: Schedule | None,
    now: datetime,
    open_ids: set[int],
    params: dict[str, str],
) -> dict[str, Any]:
    """The run log of one schedule, or of the organization's ad-hoc runs when ``schedule`` is None."""
    if schedule is not None:
        runs = selectors.run_log(schedule=schedule)
        zone_name = schedule.timezone
        panel_url = reverse("schedules_web:schedule_runs", args=[schedule.pk])
        row: ScheduleRow | None = schedule_row(schedule, now=now, params=params)
    else:
        runs = selectors.adhoc_run_log(organization=access.organization)
        zone_name = "UTC"
        panel_url = reverse("schedules_web:adhoc_runs") + f"?org={access.organization.slug}"
        row = None
    rows = [run_row(run, zone_name=zone_name, now=now, open_ids=open_ids) for run in runs]
    polling = any(not r.is_final for r in rows)
    return {
        "access": access,
        "schedule": schedule,
        "row": row,
        "rows": rows,
        "zone_name": zone_name,
        "polling": polling,
        "panel_url": panel_url,
        "poll_url": panel_url + ("&" if "?" in panel_url else "?") + "polling=1",
        "close_url": index_url(with_panel(params)),
        "run_key": uuid.uuid4().hex,
        "limit": selectors.RUN_LOG_SIZE,
    }


# --- editor -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BoundField:
    spec: FieldSpec
    value: str
    error: str
    hidden: bool = False


def editor_context(
    access: PageAccess,
    *,
    values: dict[str, str],
    schedule: Schedule | None,
    errors: dict[str, str],
    now: datetime,
    source_run: Run | None = None,
    conflict: dict[str, Any] | None = None,
    touched: set[str] | None = None,
    run_now_if_past: bool = False,
) -> dict[str, Any]:
    if schedule is not None:
        save_url = reverse("schedules_web:schedule_edit", args=[schedule.pk])
        validate_url = reverse("schedules_web:schedule_validate", args=[schedule.pk])
    else:
        save_url = reverse("schedules_web:schedule_create")
        validate_url = reverse("schedules_web:schedule_validate_new")
    shown = errors if touched is None else {k: v for k, v in errors.items() if k in touched}
    field_errors = {name: field_message(name, message) for name, message in shown.items() if name in values}
    general = [field_message(name, message) for name, message in shown.items() if name not in values]
    # Fields of the other trigger kinds start hidden (page.js shows them when the kind changes).
    kind_rule = f"trigger_kind={values.get('trigger_kind', '')}"
    bound = {
        spec.name: BoundField(
            spec=spec,
            value=values.get(spec.name, ""),
            error=field_errors.get(spec.name, ""),
            hidden=bool(spec.show_when) and spec.show_when != kind_rule,
        )
        for group in GROUPS
        for spec in group.fields
    }
    groups = [{"group": group, "fields": [bound[spec.name] for spec in group.fields]} for group in GROUPS]
    return {
        "access": access,
        "schedule": schedule,
        "values": values,
        "groups": groups,
        "fields": list(bound.values()),
        "error_fields": [field for field in bound.values() if field.error],
        "errors": field_errors,
        "general_errors": general,
        "error_count": len(shown),
        "preview": editor_preview(values, instance=schedule, now=now),
        "save_url": save_url,
        "validate_url": validate_url,
        "zones": zone_names(),
        "actions": action_names(),
        "agents": selectors.schedule_agents(organization=access.organization),
        "source_run": source_run,
        "conflict": conflict,
        "version": schedule.version if schedule is not None else "",
        "run_now_if_past": run_now_if_past,
    }
