"""Cron expressions: validation with readable errors, and next fire instants in any IANA time zone.

Parsing and wall-clock matching are cronsim's (it implements Debian cron's day-of-month / day-of-week rule);
this module adds the two things a scheduler must own itself: messages a person can act on, and the mapping from
local wall-clock matches to real instants across daylight-saving changes (docs/time.md):

* *wall-clock* expressions (minute and hour fields are fixed values: no ``*`` and no step): a local time that
  does not exist fires once at the first valid instant after the gap; a local time that occurs twice fires once,
  at its first occurrence (what Debian cron does);
* *elapsed-time* expressions (``*`` or a step in the minute or hour field): the expression is matched against the
  local clock at every real instant, so slots inside a gap do not exist and each real occurrence in a repeated
  hour fires.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_FIELDS = ("second", "minute", "hour", "day-of-month", "month", "day-of-week")
_RANGES = {
    "second": (0, 59),
    "minute": (0, 59),
    "hour": (0, 23),
    "day-of-month": (1, 31),
    "month": (1, 12),
    "day-of-week": (0, 7),
}
_NAMES = {
    "month": {m: i + 1 for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split())},
    "day-of-week": {d: i for i, d in enumerate("SUN MON TUE WED THU FRI SAT".split())},
}
_NUMBER = re.compile(r"^\d+$")
# Transitions closer together than this are not looked for between two probes (none exist in tzdata today).
_PROBE_STEP = timedelta(days=7)
_YEARS_AHEAD = 50


class CronError(ValueError):
    """An invalid cron expression; the message names the field and the reason."""


def _value(field: str, text: str) -> int:
    names = _NAMES.get(field, {})
    if text in names:
        return names[text]
    if not _NUMBER.match(text):
        hint = " (or a name like JAN)" if field == "month" else " (or a name like MON)" if field == "day-of-week" else ""
        raise CronError(f"{field}: {text!r} is not a number{hint}")
    value = int(text)
    low, high = _RANGES[field]
    if not low <= value <= high:
        raise CronError(f"{field}: {value} is outside {low}-{high}")
    return value


def _check_term(field: str, term: str) -> None:
    if term == "":
        raise CronError(f"{field}: empty item in a list")
    if field == "day-of-month" and term in {"L", "LW"}:
        return
    if field == "day-of-week" and term.endswith("L") and len(term) > 1:
        _value(field, term[:-1])
        return
    if field == "day-of-week" and "#" in term:
        day, _, nth = term.partition("#")
        _value(field, day)
        if not _NUMBER.match(nth) or not 1 <= int(nth) <= 5:
            raise CronError(f"day-of-week: in {term!r} the week number must be 1-5")
        return
    base, slash, step = term.partition("/")
    if slash:
        if not _NUMBER.match(step):
            raise CronError(f"{field}: step {step!r} in {term!r} is not a number")
        if int(step) == 0:
            raise CronError(f"{field}: step in {term!r} must be at least 1")
        low, high = _RANGES[field]
        if int(step) > high - low + 1:
            raise CronError(f"{field}: step {step} in {term!r} is larger than the range {low}-{high}")
    if base == "*":
        return
    start, dash, end = base.partition("-")
    first = _value(field, start)
    if dash:
        last = _value(field, end)
        if last < first:
            raise CronError(f"{field}: range {base!r} goes backwards ({first} > {last})")


def normalize(expression: str) -> str:
    """Expand macros, upper-case names and squeeze spaces; raise CronError on anything invalid."""
    text = " ".join(expression.strip().split())
    if not text:
        raise CronError("expression: is empty; write 5 fields (minute hour day-of-month month day-of-week)")
    if text.startswith("@"):
        macro = MACROS.get(text.lower())
        if macro is None:
            raise CronError(f"expression: unknown macro {text!r}; use one of {', '.join(MACROS)}")
        text = macro
    parts = text.upper().split(" ")
    if len(parts) not in (5, 6):
        raise CronError(
            f"expression: has {len(parts)} fields; write 5 (minute hour day-of-month month day-of-week) "
            "or 6 with a leading seconds field"
        )
    names = _FIELDS if len(parts) == 6 else _FIELDS[1:]
    for field, part in zip(names, parts, strict=True):
        for term in part.split(","):
            _check_term(field, term)
    normalized = " ".join(parts)
    try:
        CronSim(normalized, datetime(2000, 1, 1))
    except CronSimError as exc:
        if "day-of-month" in str(exc):
            raise CronError("day-of-month: no chosen month has that many days") from None
        raise CronError(f"expression: {exc} in {expression.strip()!r}") from None
    return normalized


@dataclass(frozen=True)
class CronExpression:
    """A validated expression bound to a time zone."""

    expression: str
    timezone: str

    @property
    def fields(self) -> list[str]:
        return self.expression.split(" ")

    @property
    def has_seconds(self) -> bool:
        return len(self.fields) == 6

    @property
    def is_wall_clock(self) -> bool:
        """Minute and hour are fixed values: matched on the local wall clock (Debian cron's DST rule)."""
        minute, hour = self.fields[-5], self.fields[-4]
        return not any(ch in minute + hour for ch in "*/")

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def next_after(self, after: datetime) -> datetime | None:
        """The first fire instant strictly after ``after`` (aware), in UTC; None if there is none for 50 years."""
        after = after.astimezone(UTC)
        if self.is_wall_clock:
            return self._next_wall_clock(after)
        return self._next_elapsed(after)

    def iter_after(self, after: datetime) -> Iterator[datetime]:
        current: datetime | None = after
        while current is not None:
            current = self.next_after(current)
            if current is not None:
                yield current

    def min_gap_seconds(self) -> int | None:
        """Smallest gap between two consecutive fires inside a minute, for 6-field expressions."""
        if not self.has_seconds:
            return None
        seconds = sorted(_expand_seconds(self.fields[0]))
        if len(seconds) < 2:
            return None
        gaps = [b - a for a, b in zip(seconds, seconds[1:], strict=False)]
        gaps.append(60 - seconds[-1] + seconds[0])
        return min(gaps)

    # -- wall-clock expressions ------------------------------------------------------------------------------
    def _next_wall_clock(self, after: datetime) -> datetime | None:
        tz = self.tz
        local = after.astimezone(tz)
        # Start from the wall time one second before so that a match at exactly ``local`` is found again when
        # ``after`` is the second occurrence of an ambiguous time; results <= after are dropped below.
        naive = local.replace(tzinfo=None) - timedelta(seconds=1)
        horizon = naive.year + _YEARS_AHEAD
        for wall in _naive_iter(self.expression, naive):
            if wall.year > horizon:
                return None
            instant = _wall_to_instant_first(wall, tz)
            if instant > after:
                return instant
        return None

    # -- elapsed-time expressions ----------------------------------------------------------------------------
    def _next_elapsed(self, after: datetime) -> datetime | None:
        # Within a stretch of constant UTC offset, local wall time and real time move together, so the first
        # wall-clock match is the first real one. When the offset changes before that match, the search goes on
        # from the first wall time of the next stretch: gap slots never exist, repeated hours fire twice.
        tz = self.tz
        segment_start = after
        offset = _offset(after, tz)
        lower_wall = (after + offset).replace(tzinfo=None)
        deadline = after + timedelta(days=366 * _YEARS_AHEAD)
        while segment_start < deadline:
            wall = _naive_next(self.expression, lower_wall)
            if wall is None:
                return None
            candidate = (wall - offset).replace(tzinfo=UTC)
            transition = _next_transition(segment_start, candidate, tz, offset)
            if transition is None:
                return candidate
            segment_start = transition
            offset = _offset(transition, tz)
            lower_wall = (transition + offset).replace(tzinfo=None) - timedelta(seconds=1)
        return None


def _expand_seconds(field: str) -> set[int]:
    sim = CronSim(f"{field} * * * * *", datetime(2000, 1, 1))
    return set(sim.seconds)


def _naive_iter(expression: str, after: datetime) -> Iterator[datetime]:
    return iter(CronSim(expression, after))


def _naive_next(expression: str, after: datetime) -> datetime | None:
    try:
        return next(iter(CronSim(expression, after)))
    except StopIteration:
        return None


def _offset(instant: datetime, tz: ZoneInfo) -> timedelta:
    off = instant.astimezone(tz).utcoffset()
    assert off is not None
    return off


def _next_transition(start: datetime, end: datetime, tz: ZoneInfo, offset: timedelta) -> datetime | None:
    """The first instant in (start, end] whose UTC offset differs from ``offset``, to the second."""
    probe = start
    while probe < end:
        step_end = min(probe + _PROBE_STEP, end)
        if _offset(step_end, tz) != offset:
            low, high = probe, step_end
            while high - low > timedelta(seconds=1):
                mid = low + (high - low) / 2
                mid = mid.replace(microsecond=0) if mid.microsecond else mid
                if mid <= low:
                    break
                if _offset(mid, tz) != offset:
                    high = mid
                else:
                    low = mid
            return high
        probe = step_end
    return None


def _wall_to_instant_first(wall: datetime, tz: ZoneInfo) -> datetime:
    """A local wall time's instant: its first occurrence, or the end of the gap if it does not exist."""
    instant = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) == wall:
        return instant
    # Inside a spring-forward gap: fold=0 and fold=1 read the wall time with the offsets from either side of the
    # transition, so the transition lies between them; the first valid instant after the gap is the transition.
    other = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    low, high = min(instant, other), max(instant, other)
    transition = _next_transition(low, high, tz, _offset(low, tz))
    return transition if transition is not None else high


@lru_cache(maxsize=2048)
def parse(expression: str, timezone: str) -> CronExpression:
    return CronExpression(normalize(expression), timezone)
