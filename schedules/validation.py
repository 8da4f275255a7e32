"""Every rule a schedule definition must satisfy, in one place: forms, admin, API, commands and YAML call it.

``schedule_clean`` takes raw field values (as from JSON or a form) and returns typed, validated ones, or raises
ValidationError with one message per bad field. It never writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from echoflow.accounts.models import Organization
from runs.actions import action_validate
from schedules.models import ActionKind, MisfirePolicy, OverlapPolicy, Schedule
from schedules.triggers import Trigger, TriggerKind, trigger_validate

FIELDS = (
    "name",
    "description",
    "agent",
    "labels",
    "trigger_kind",
    "cron",
    "interval_seconds",
    "run_at",
    "timezone",
    "start_at",
    "end_at",
    "max_runs",
    "catchup_window_seconds",
    "misfire_policy",
    "jitter_seconds",
    "max_concurrency",
    "overlap_policy",
    "max_attempts",
    "backoff_seconds",
    "timeout_seconds",
    "priority",
    "pause_after_failures",
    "action_kind",
    "action_name",
    "action_config",
    "payload",
)
_INT_BOUNDS: dict[str, tuple[int, int]] = {
    "interval_seconds": (1, 10**9),
    "max_runs": (-(10**9), 10**9),
    "catchup_window_seconds": (0, 366 * 86400),
    "jitter_seconds": (0, 86400),
    "max_concurrency": (1, 10_000),
    "max_attempts": (1, 100),
    "timeout_seconds": (1, 7 * 86400),
    "priority": (0, 9),
    "pause_after_failures": (1, 10_000),
}
_TEXT_LIMITS = {
    "name": 200,
    "description": 4000,
    "agent": 100,
    "cron": 200,
    "timezone": 64,
    "action_name": 200,
}


def _to_int(name: str, value: Any, errors: dict[str, str]) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        errors[name] = "must be a whole number"
        return None
    try:
        number = int(value)
        if isinstance(value, float) and value != number:
            raise ValueError
    except (TypeError, ValueError):
        errors[name] = f"must be a whole number; got {value!r}"
        return None
    low, high = _INT_BOUNDS.get(name, (0, 10**9))
    if name == "max_runs" and number < 1:
        errors[name] = f"must be at least 1; got {number}"
        return None
    if not low <= number <= high:
        errors[name] = f"must be between {low} and {high}; got {number}"
        return None
    return number


def _to_datetime(name: str, value: Any, errors: dict[str, str]) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed: datetime | None = value
    else:
        try:
            parsed = parse_datetime(str(value))
        except ValueError:
            parsed = None
        if parsed is None:
            errors[name] = f"{value!r} is not an ISO-8601 date-time (e.g. 2026-10-01T08:00:00+02:00)"
            return None
    assert parsed is not None
    if parsed.tzinfo is None:
        errors[name] = "needs a UTC offset or time zone (e.g. 2026-10-01T08:00:00+02:00)"
        return None
    offset = parsed.utcoffset()
    if offset is not None and abs(offset) > timedelta(hours=14):
        errors[name] = f"UTC offset {offset} is beyond ±14:00, which no time zone uses"
        return None
    if not 1970 <= parsed.year <= 9000:
        errors[name] = f"year {parsed.year} is outside 1970-9000"
        return None
    return parsed.astimezone(UTC)


def schedule_clean(
    data: Mapping[str, Any],
    *,
    organization: Organization,
    instance: Schedule | None = None,
    now: datetime | None = None,
    allow_past_once: bool = False,
) -> dict[str, Any]:
    """Validate a whole definition (``instance`` supplies values ``data`` leaves out, for partial updates)."""
    now = now or timezone.now()
    unknown = sorted(set(data) - set(FIELDS) - {"delay_seconds", "run_now_if_past"})
    errors: dict[str, str] = {}
    for key in unknown:
        errors[key] = "is not a schedule field"
    merged: dict[str, Any] = {}
    for field in FIELDS:
        if field in data:
            merged[field] = data[field]
        elif instance is not None:
            merged[field] = getattr(instance, field)
    defaults = {
        "description": "",
        "agent": "",
        "labels": {},
        "cron": "",
        "timezone": "UTC",
        "catchup_window_seconds": settings.ECHOFLOW["DEFAULT_CATCHUP_WINDOW_SECONDS"],
        "misfire_policy": MisfirePolicy.COALESCE,
        "jitter_seconds": 0,
        "max_concurrency": 1,
        "overlap_policy": OverlapPolicy.SKIP,
        "max_attempts": 3,
        "backoff_seconds": [30, 60, 300, 900, 3600],
        "timeout_seconds": 300,
        "priority": 5,
        "action_kind": ActionKind.PYTHON,
        "action_name": "",
        "action_config": {},
        "payload": {},
    }
    for key, value in defaults.items():
        if merged.get(key) is None:
            merged[key] = value

    for field, limit in _TEXT_LIMITS.items():
        value = merged.get(field)
        if value is None:
            continue
        if not isinstance(value, str):
            errors[field] = "must be text"
        elif len(value) > limit:
            errors[field] = f"is {len(value)} characters long; the limit is {limit}"
    name = (merged.get("name") or "").strip() if isinstance(merged.get("name"), str) else ""
    if not name:
        errors.setdefault("name", "is required")
    merged["name"] = name
    for field in _INT_BOUNDS:
        if field in merged and field not in errors:
            merged[field] = _to_int(field, merged[field], errors)
    for field in ("run_at", "start_at", "end_at"):
        if field not in errors:
            merged[field] = _to_datetime(field, merged.get(field), errors)
    if "delay_seconds" in data:
        delay = _to_int("delay_seconds", data["delay_seconds"], errors)
        if delay is not None:
            if delay < 0:
                errors["delay_seconds"] = "must not be negative"
            else:
                merged["trigger_kind"] = TriggerKind.ONCE
                merged["run_at"] = now + timedelta(seconds=delay)
    if merged.get("misfire_policy") not in MisfirePolicy.values:
        errors["misfire_policy"] = f"must be one of {', '.join(MisfirePolicy.values)}"
    if merged.get("overlap_policy") not in OverlapPolicy.values:
        errors["overlap_policy"] = f"must be one of {', '.join(OverlapPolicy.values)}"
    backoff = merged.get("backoff_seconds")
    if not (
        isinstance(backoff, list)
        and backoff
        and all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 7 * 86400 for x in backoff)
    ):
        errors["backoff_seconds"] = "must be a non-empty list of whole seconds between 0 and 604800"
    if not isinstance(merged.get("labels"), dict):
        errors["labels"] = "must be an object of name: value"
    if not isinstance(merged.get("action_config"), dict):
        errors["action_config"] = "must be a JSON object"

    try:
        trigger = trigger_validate(
            kind=str(merged.get("trigger_kind") or ""),
            timezone=str(merged.get("timezone") or ""),
            cron=str(merged.get("cron") or ""),
            interval_seconds=merged.get("interval_seconds"),
            run_at=merged.get("run_at"),
            start_at=merged.get("start_at"),
            end_at=merged.get("end_at"),
            max_runs=merged.get("max_runs"),
            anchor=instance.created_at if instance is not None else now,
        )
        merged["cron"] = trigger.cron
        if (
            trigger.kind == TriggerKind.ONCE
            and trigger.run_at is not None
            and trigger.run_at < now - timedelta(seconds=1)
            and not (allow_past_once or data.get("run_now_if_past"))
            and (instance is None or "run_at" in data or "trigger_kind" in data)
        ):
            errors["run_at"] = f"{trigger.run_at.isoformat()} is in the past; pass run_now_if_past to run it now"
    except ValidationError as exc:
        for key, messages in exc.message_dict.items():
            errors.setdefault(key, messages[0])
    try:
        action_validate(
            kind=str(merged.get("action_kind")),
            name=str(merged.get("action_name") or ""),
            config=config if isinstance(config := merged.get("action_config"), dict) else {},
            payload=merged.get("payload"),
        )
    except ValidationError as exc:
        for key, messages in exc.message_dict.items():
            errors.setdefault(key, messages[0])

    if "name" not in errors:
        clash = Schedule.objects.filter(organization=organization, name=name)
        if instance is not None:
            clash = clash.exclude(pk=instance.pk)
        if clash.exists():
            errors["name"] = f"a schedule named {name!r} already exists in this organization"
    if errors:
        raise ValidationError(errors)
    return merged


def first_slot(trigger: Trigger, *, now: datetime, allow_past_once: bool = False) -> datetime | None:
    """The first slot of a new or re-timed schedule: the next one from now. A past one-off the request asked to
    run anyway is planned at ``now``, so the catch-up window cannot count it as missed."""
    if trigger.kind == TriggerKind.ONCE and allow_past_once and trigger.run_at and trigger.run_at <= now:
        return now
    return trigger.next_after(now - timedelta(microseconds=1))
