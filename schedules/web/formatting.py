"""How the page says things: triggers in words, times in a schedule's zone, "in 12 min", durations.

Pure functions of their arguments (no database), so the table, the editor's preview and the run log agree.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cron_descriptor import ExpressionDescriptor, Options

from schedules.triggers import TriggerKind, format_seconds

# In available_timezones() but not usable for schedules (see schedules.triggers._EXCLUDED_ZONES).
_NOT_SCHEDULE_ZONES = frozenset({"localtime", "Factory"})


@lru_cache(maxsize=1)
def zone_names() -> tuple[str, ...]:
    """Every IANA zone a schedule may use, sorted, for the editor's time zone picker."""
    return tuple(sorted(available_timezones() - _NOT_SCHEDULE_ZONES))


def zone_or_utc(name: str) -> ZoneInfo:
    """The named zone, or UTC when the name is not a zone (the editor shows the error; the page still renders)."""
    try:
        return ZoneInfo(name) if name in zone_names() else ZoneInfo("UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


@lru_cache(maxsize=512)
def cron_words(expression: str) -> str:
    """'0 8 * * 1-5' -> 'At 08:00, Monday through Friday' (cron-descriptor, 24-hour clock)."""
    options = Options()
    options.use_24hour_time_format = True
    options.verbose = False
    try:
        return str(ExpressionDescriptor(expression, options).get_description())
    except Exception:
        # cron-descriptor knows fewer spellings than our parser; the expression itself is still exact.
        return f"Cron {expression}"


def local_time(moment: datetime, zone: ZoneInfo, *, seconds: bool = False, year: bool = False) -> str:
    """'Mon 23 Nov 08:00 CST' in ``zone``."""
    local = moment.astimezone(zone)
    clock = "%H:%M:%S" if seconds else "%H:%M"
    day = "%a %d %b %Y" if year else "%a %d %b"
    return f"{local.strftime(day)} {local.strftime(clock)} {local.strftime('%Z')}"


def trigger_words(
    *,
    kind: str,
    timezone: str,
    cron: str = "",
    interval_seconds: int | None = None,
    run_at: datetime | None = None,
    end_at: datetime | None = None,
    max_runs: int | None = None,
) -> str:
    """A trigger as a sentence: 'At 08:00, Monday through Friday (Asia/Shanghai)'."""
    zone = zone_or_utc(timezone)
    if kind == TriggerKind.CRON:
        text = f"{cron_words(cron)} ({timezone})"
    elif kind == TriggerKind.INTERVAL:
        text = f"Every {format_seconds(interval_seconds or 0)}"
    elif kind == TriggerKind.ONCE and run_at is not None:
        text = f"Once, at {local_time(run_at, zone, year=True)} ({timezone})"
    else:
        text = kind
    if max_runs:
        text += f", {max_runs} time{'s' if max_runs != 1 else ''} at most"
    if end_at is not None and kind != TriggerKind.ONCE:
        text += f", until {local_time(end_at, zone, year=True)}"
    return text


def relative(moment: datetime, now: datetime) -> str:
    """'in 12 min', '3 h ago', 'in 2 days'."""
    seconds = (moment - now).total_seconds()
    future = seconds > 0
    size = abs(seconds)
    if size < 1:
        return "now"
    if size < 60:
        text = f"{int(size)} s"
    elif size < 3600:
        text = f"{round(size / 60)} min"
    elif size < 48 * 3600:
        hours, rest = divmod(int(size), 3600)
        minutes = round(rest / 60)
        text = f"{hours} h" if hours >= 10 or minutes == 0 else f"{hours} h {minutes} min"
    else:
        text = f"{round(size / 86400)} days"
    return f"in {text}" if future else f"{text} ago"


def duration_words(delta: timedelta | None) -> str:
    """'180 ms', '1.2 s', '3 min 05 s', '2 h 03 min'; '' when unknown."""
    if delta is None:
        return ""
    ms = max(int(delta.total_seconds() * 1000), 0)
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    seconds = ms // 1000
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {(seconds % 3600) // 60:02d} min"


def percent(part: int, whole: int) -> str:
    """'97.5 %' (one decimal only when it matters); '—' when there is nothing to divide."""
    if whole <= 0:
        return "—"
    value = 100.0 * part / whole
    return f"{value:.0f} %" if value in (0.0, 100.0) or value == round(value) else f"{value:.1f} %"


def iso(moment: datetime | None) -> str:
    return moment.astimezone(UTC).isoformat() if moment is not None else ""
