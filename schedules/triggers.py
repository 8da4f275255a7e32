"""Triggers: when a schedule fires. One implementation, used by the dispatcher, admin, preview and backfill.

A trigger is pure data plus arithmetic: no database access, so the dispatcher can compute slots for a batch of
schedules without a query per schedule.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from schedules.cron import CronError, CronExpression, parse


class TriggerKind(models.TextChoices):
    ONCE = "once", "Once"
    INTERVAL = "interval", "Interval"
    CRON = "cron", "Cron"


# In available_timezones() but not usable for schedules: "localtime" is whatever the host is set to, "Factory"
# is a placeholder with no real offset. The "posix/" and "right/" trees (the latter counts leap seconds, 27 s off
# UTC) are not in available_timezones() at all.
_EXCLUDED_ZONES = frozenset({"localtime", "Factory"})


@lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones() - _EXCLUDED_ZONES)


@lru_cache(maxsize=1)
def _zone_names_by_lower() -> dict[str, str]:
    return {name.lower(): name for name in _zone_names()}


@lru_cache(maxsize=1)
def _zone_names_by_city() -> dict[str, list[str]]:
    """Zone names by their last part, lower-cased: berlin -> [Europe/Berlin]."""
    by_city: dict[str, list[str]] = {}
    for name in sorted(_zone_names()):
        if "/" in name:
            by_city.setdefault(name.rsplit("/", 1)[1].lower(), []).append(name)
    return by_city


def zone_get(name: str) -> ZoneInfo:
    """The IANA zone called ``name``; an unknown name raises ValidationError suggesting the closest ones."""
    if not isinstance(name, str):
        name = ""
    if name in _zone_names():
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    raise ValidationError({"timezone": f"{name!r} is not a known IANA time zone{_zone_hint(name)}"})


def _zone_hint(name: str) -> str:
    """Up to three real names close to ``name``: a case slip first, then by city, then by the whole name."""
    cleaned = name.strip().replace(" ", "_").lower()
    by_lower = _zone_names_by_lower()
    by_city = _zone_names_by_city()
    city = cleaned.rsplit("/", 1)[-1]
    candidates = [by_lower[cleaned]] if cleaned in by_lower else []
    for match in difflib.get_close_matches(city, sorted(by_city), n=3, cutoff=0.8):
        candidates.extend(by_city[match])
    candidates.extend(by_lower[m] for m in difflib.get_close_matches(cleaned, sorted(by_lower), n=3, cutoff=0.6))
    suggestions = list(dict.fromkeys(candidates))[:3]
    if suggestions:
        return f"; did you mean {', '.join(suggestions)}?"
    return "; use an IANA name like Europe/Berlin or America/New_York"


@dataclass(frozen=True)
class Trigger:
    kind: str
    timezone: str = "UTC"
    cron: str = ""
    interval_seconds: int | None = None
    run_at: datetime | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None
    anchor: datetime | None = None  # interval anchor when start_at is empty (the schedule's creation)

    def _cron(self) -> CronExpression:
        return parse(self.cron, self.timezone)

    def next_after(self, after: datetime) -> datetime | None:
        """The first slot strictly after ``after`` within [start_at, end_at], or None."""
        after = after.astimezone(UTC)
        if self.start_at is not None and after < self.start_at:
            # Slots at exactly start_at count.
            after = self.start_at - timedelta(microseconds=1)
        slot: datetime | None
        if self.kind == TriggerKind.ONCE:
            assert self.run_at is not None
            slot = self.run_at if self.run_at > after else None
        elif self.kind == TriggerKind.INTERVAL:
            assert self.interval_seconds is not None
            anchor = self.start_at or self.anchor or after
            step = timedelta(seconds=self.interval_seconds)
            # Slots are anchor + k·N, computed in exact integer arithmetic (timedelta // timedelta), never
            # accumulated from earlier runs: no drift, however late those runs were.
            slot = anchor if after < anchor else anchor + ((after - anchor) // step + 1) * step
        else:
            slot = self._cron().next_after(after)
        if slot is not None and self.end_at is not None and slot > self.end_at:
            return None
        return slot

    def iter_after(self, after: datetime) -> Iterator[datetime]:
        """Every slot strictly after ``after``, in order (the dispatcher's own chain of next_after calls)."""
        slot = self.next_after(after)
        while slot is not None:
            yield slot
            slot = self.next_after(slot)

    def preview(self, *, after: datetime, count: int) -> list[datetime]:
        out: list[datetime] = []
        for slot in self.iter_after(after):
            out.append(slot)
            if len(out) >= count:
                break
        return out

    def period_hint(self, slot: datetime) -> timedelta | None:
        """The gap to the next slot (for jitter bounds), or None when there is no next one."""
        following = self.next_after(slot)
        return None if following is None else following - slot

    def describe(self) -> str:
        if self.kind == TriggerKind.ONCE:
            assert self.run_at is not None
            return f"once at {self.run_at.astimezone(ZoneInfo(self.timezone)).isoformat()}"
        if self.kind == TriggerKind.INTERVAL:
            return f"every {format_seconds(self.interval_seconds or 0)}"
        return f"cron {self.cron} ({self.timezone})"


def format_seconds(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0 and seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


class TriggerColumns(Protocol):
    """The columns a schedule row keeps its trigger in (a Schedule, or the dispatcher's DueSchedule)."""

    @property
    def trigger_kind(self) -> str: ...
    @property
    def timezone(self) -> str: ...
    @property
    def cron(self) -> str: ...
    @property
    def interval_seconds(self) -> int | None: ...
    @property
    def run_at(self) -> datetime | None: ...
    @property
    def start_at(self) -> datetime | None: ...
    @property
    def end_at(self) -> datetime | None: ...
    @property
    def created_at(self) -> datetime: ...


def trigger_of(row: TriggerColumns) -> Trigger:
    """The trigger of a schedule row; an interval without start_at is anchored at the schedule's creation."""
    return Trigger(
        kind=row.trigger_kind,
        timezone=row.timezone,
        cron=row.cron,
        interval_seconds=row.interval_seconds,
        run_at=row.run_at,
        start_at=row.start_at,
        end_at=row.end_at,
        anchor=row.created_at,
    )


def jitter_offset(*, schedule_id: int, slot: datetime, jitter_seconds: int, period: timedelta | None) -> timedelta:
    """Deterministic delay in [0, jitter] for one (schedule, slot), never reaching the next slot."""
    if jitter_seconds <= 0:
        return timedelta(0)
    limit = float(jitter_seconds)
    if period is not None:
        limit = min(limit, max(period.total_seconds() - 1.0, 0.0))
    # Hash the slot in UTC so the same instant gives the same delay whatever zone the caller's datetime is in.
    digest = hashlib.blake2b(f"{schedule_id}:{slot.astimezone(UTC).isoformat()}".encode(), digest_size=8).digest()
    fraction = int.from_bytes(digest, "big") / 2**64
    return timedelta(seconds=round(fraction * limit, 3))


def trigger_validate(
    *,
    kind: str,
    timezone: str,
    cron: str = "",
    interval_seconds: int | None = None,
    run_at: datetime | None = None,
    start_at: datetime | None = None,
    end_at: datetime | None = None,
    max_runs: int | None = None,
    anchor: datetime | None = None,
) -> Trigger:
    """Check every rule of a trigger; raise ValidationError with a message per bad field.

    The one place these rules live: forms, the admin, the API, commands and the YAML loader all call it.
    """
    errors: dict[str, str] = {}
    min_interval = settings.ECHOFLOW["MIN_INTERVAL_SECONDS"]
    max_interval = settings.ECHOFLOW["MAX_INTERVAL_SECONDS"]
    if kind not in TriggerKind.values:
        errors["trigger_kind"] = f"{kind!r} is not one of {', '.join(TriggerKind.values)}"
    try:
        zone_get(timezone)
    except ValidationError as exc:
        errors.update({k: v[0] for k, v in exc.message_dict.items()})
    normalized_cron = ""
    if kind == TriggerKind.CRON:
        if not cron.strip():
            errors["cron"] = "is required for a cron trigger"
        else:
            try:
                expression = parse(cron, "UTC")
                normalized_cron = expression.expression
                gap = expression.min_gap_seconds()
                if gap is not None and gap < min_interval:
                    errors["cron"] = (
                        f"fires every {gap} s, below the minimum interval of {min_interval} s "
                        "(ECHOFLOW_MIN_INTERVAL_SECONDS)"
                    )
            except CronError as exc:
                errors["cron"] = str(exc)
    elif kind == TriggerKind.INTERVAL:
        if interval_seconds is None:
            errors["interval_seconds"] = "is required for an interval trigger"
        elif interval_seconds < min_interval:
            errors["interval_seconds"] = f"{interval_seconds} s is below the minimum of {min_interval} s"
        elif interval_seconds > max_interval:
            errors["interval_seconds"] = f"{interval_seconds} s is above the maximum of {max_interval} s"
    elif kind == TriggerKind.ONCE and run_at is None:
        errors["run_at"] = "is required for a once trigger (or give a delay in seconds)"
    for name, value in (("run_at", run_at), ("start_at", start_at), ("end_at", end_at)):
        if value is not None and value.tzinfo is None:
            errors[name] = "needs a UTC offset or time zone (e.g. 2026-10-01T08:00:00+02:00)"
    if start_at and end_at and start_at.tzinfo and end_at.tzinfo and end_at <= start_at:
        errors["end_at"] = "must be after start_at"
    if max_runs is not None and max_runs < 1:
        errors["max_runs"] = f"must be at least 1; got {max_runs}"
    if errors:
        raise ValidationError(errors)
    return Trigger(
        kind=kind,
        timezone=timezone,
        cron=normalized_cron,
        interval_seconds=interval_seconds if kind == TriggerKind.INTERVAL else None,
        run_at=run_at.astimezone(UTC) if (run_at and kind == TriggerKind.ONCE) else None,
        start_at=start_at.astimezone(UTC) if start_at else None,
        end_at=end_at.astimezone(UTC) if end_at else None,
        anchor=anchor,
    )
