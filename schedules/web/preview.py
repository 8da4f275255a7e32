"""The editor's live preview: the trigger in words and its next fire times, by the dispatcher's own arithmetic
(schedules.triggers.trigger_validate and schedules.selectors.schedule_preview), from what the user typed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.core.exceptions import ValidationError

from schedules.models import Schedule
from schedules.selectors import schedule_preview
from schedules.triggers import trigger_validate
from schedules.web.formatting import local_time, relative, trigger_words, zone_or_utc
from schedules.web.forms import aware_text, field_message

PREVIEW_COUNT = 5


@dataclass(frozen=True)
class PreviewSlot:
    local: str
    relative: str
    iso: str


@dataclass(frozen=True)
class Preview:
    words: str = ""
    zone: str = ""
    slots: tuple[PreviewSlot, ...] = ()
    problem: str = ""


def _int_or_none(text: str) -> int | None:
    try:
        return int(text.strip())
    except (ValueError, AttributeError):
        return None


def _datetime_or_none(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def editor_preview(values: Mapping[str, str], *, instance: Schedule | None, now: datetime) -> Preview:
    """The trigger in words and its next fire times, computed by the dispatcher's own arithmetic."""
    zone = values.get("timezone", "").strip() or "UTC"
    max_runs = _int_or_none(values.get("max_runs", ""))
    start_at = _datetime_or_none(aware_text(values.get("start_at", ""), zone))
    try:
        trigger = trigger_validate(
            kind=values.get("trigger_kind", ""),
            timezone=zone,
            cron=values.get("cron", ""),
            interval_seconds=_int_or_none(values.get("interval_seconds", "")),
            run_at=_datetime_or_none(aware_text(values.get("run_at", ""), zone)),
            start_at=start_at,
            end_at=_datetime_or_none(aware_text(values.get("end_at", ""), zone)),
            max_runs=max_runs,
            # An interval without a start is anchored at creation (schedule_create), i.e. now for a new one.
            anchor=(instance.start_at or instance.created_at) if instance is not None else now.replace(microsecond=0),
        )
    except ValidationError as exc:
        key, messages = next(iter(exc.message_dict.items()))
        reason = field_message(key, messages[0])
        return Preview(problem=f"No preview yet — {reason}{'' if reason.endswith(('.', '?', '!')) else '.'}")
    count = PREVIEW_COUNT
    if max_runs is not None:
        done = instance.runs_count if instance is not None else 0
        count = max(min(count, max_runs - done), 0)
    after = now - timedelta(microseconds=1)
    slots = schedule_preview(trigger=trigger, count=count, after=after) if count else []
    words = trigger_words(
        kind=trigger.kind,
        timezone=trigger.timezone,
        cron=trigger.cron,
        interval_seconds=trigger.interval_seconds,
        run_at=trigger.run_at,
        end_at=trigger.end_at,
        max_runs=max_runs,
    )
    zone_info = zone_or_utc(trigger.timezone)
    problem = "" if slots else "This trigger has no future fire time: it would complete without running."
    return Preview(
        words=words,
        zone=trigger.timezone,
        slots=tuple(
            PreviewSlot(
                local=local_time(slot, zone_info, seconds=slot.second != 0, year=True),
                relative=relative(slot, now),
                iso=slot.astimezone(UTC).isoformat(),
            )
            for slot in slots
        ),
        problem=problem,
    )
