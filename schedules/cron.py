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

import bisect
import itertools
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
    "month": {
        m: i + 1
        for i, m in enumerate(["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"])
    },
    "day-of-week": {d: i for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])},
}
# ASCII digits only: str.isdigit() and \d accept other scripts' digits, which cronsim rejects.
_NUMBER = re.compile(r"[0-9]+")
# UTC-offset changes are looked for with probes this far apart; tzdata has no two changes closer than that.
_PROBE_STEP = timedelta(hours=6)
_YEARS_AHEAD = 50
_MAX_YEAR = 9000


class CronError(ValueError):
    """An invalid cron expression; the message names the field and the reason."""


def _value(field: str, text: str) -> int:
    names = _NAMES.get(field, {})
    if text.upper() in names:
        return names[text.upper()]
    if not _NUMBER.fullmatch(text):
        hint = {"month": " (or a name like JAN)", "day-of-week": " (or a name like MON)"}.get(field, "")
        if text == "?":
            hint = "; ? is not supported, write *"
        raise CronError(f"{field}: {text!r} is not a number{hint}")
    value = int(text)
    low, high = _RANGES[field]
    if not low <= value <= high:
        raise CronError(f"{field}: {value} is outside {low}-{high}")
    return value


def _check_term(field: str, term: str) -> str:
    """Check one comma-separated item as typed (messages quote it so); return it as cronsim should read it."""
    upper = term.upper()
    if term == "":
        raise CronError(f"{field}: empty item in a list")
    if field == "day-of-month":
        if upper in {"L", "LW"}:
            return upper
        if "W" in upper:
            raise CronError(f"day-of-month: in {term!r}, W is supported only as LW (the last weekday of the month)")
        if "L" in upper:
            raise CronError(f"day-of-month: in {term!r}, L stands alone (L = the last day, LW = the last weekday)")
    if field == "day-of-week" and upper.endswith("L"):
        if upper == "L":
            raise CronError("day-of-week: L needs a day before it (5L = the last Friday of the month)")
        # cronsim reads only numbers before L: FRIL becomes 5L.
        return f"{_value(field, term[:-1])}L"
    if field == "day-of-week" and "#" in term:
        day, _, nth = term.partition("#")
        _value(field, day)
        if not _NUMBER.fullmatch(nth) or not 1 <= int(nth) <= 5:
            raise CronError(f"day-of-week: in {term!r} the week number must be 1-5")
        return upper
    base, slash, step = term.partition("/")
    if slash:
        if not _NUMBER.fullmatch(step):
            raise CronError(f"{field}: step {step!r} in {term!r} is not a number")
        if int(step) == 0:
            raise CronError(f"{field}: step in {term!r} must be at least 1")
        low, high = _RANGES[field]
        if int(step) > high - low + 1:
            raise CronError(f"{field}: step {int(step)} in {term!r} is larger than the range {low}-{high}")
    if base == "*":
        return upper
    start, dash, end = base.partition("-")
    first = _value(field, start)
    if dash:
        last = _value(field, end)
        if last < first:
            raise CronError(f"{field}: range {base!r} goes backwards ({first} > {last})")
    return upper


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
    parts = text.split(" ")
    if len(parts) not in (5, 6):
        raise CronError(
            f"expression: has {len(parts)} fields; write 5 (minute hour day-of-month month day-of-week) "
            "or 6 with a leading seconds field"
        )
    names = _FIELDS if len(parts) == 6 else _FIELDS[1:]
    parts = [
        ",".join(_check_term(field, term) for term in part.split(",")) for field, part in zip(names, parts, strict=True)
    ]
    normalized = " ".join(parts)
    try:
        CronSim(normalized, datetime(2000, 1, 1))
    except CronSimError as exc:
        message = str(exc)
        if "day-of-month" in message:
            raise CronError("day-of-month: no chosen month has that many days") from None
        field = message.removeprefix("Bad ").strip()
        field = field if field in _FIELDS else "expression"
        raise CronError(f"{field}: is not valid in {expression.strip()!r}") from None
    except (ValueError, IndexError, KeyError) as exc:  # defensive: cronsim must never leak a traceback
        raise CronError(f"expression: {expression.strip()!r} is not valid ({exc})") from None
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
        return _next_after_cached(self, after.astimezone(UTC))

    def _next_after(self, after: datetime) -> datetime | None:
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
        """Smallest gap in seconds between two consecutive fires, for 6-field expressions (None: a minute or more).

        Only gaps inside a minute, or from one minute to the next when two consecutive minutes both fire, can be
        under 60 s; this reads them off the seconds and minute fields.
        """
        if not self.has_seconds:
            return None
        sim = CronSim(self.expression, datetime(2000, 1, 1))
        seconds = sorted(sim.seconds)
        gaps = [b - a for a, b in itertools.pairwise(seconds)]
        minutes = sim.minutes
        if any((m + 1) % 60 in minutes for m in minutes):
            gaps.append(60 - seconds[-1] + seconds[0])
        gap = min(gaps, default=60)
        return gap if gap < 60 else None

    # -- wall-clock expressions ------------------------------------------------------------------------------
    def _next_wall_clock(self, after: datetime) -> datetime | None:
        tz = self.tz
        local = after.astimezone(tz)
        # Wall times after ``local`` map to instants after ``after`` (gap times map to the transition, repeated
        # times to their first occurrence, both monotonic), except repeated times whose first occurrence already
        # passed: those are skipped below.
        naive = local.replace(tzinfo=None)
        horizon = naive.year + _YEARS_AHEAD
        for wall in _naive_iter(self.expression, naive):
            if wall.year > horizon:
                return None
            instant = _wall_to_instant_first(wall, self.timezone)
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
            transition = _next_transition(segment_start, candidate, self.timezone)
            if transition is None:
                return candidate
            segment_start = transition
            offset = _offset(transition, tz)
            # One second back, so that a match at exactly the transition's wall time is found.
            lower_wall = (transition + offset).replace(tzinfo=None) - timedelta(seconds=1)
        return None


# The dispatcher asks for the next slot of every due schedule; when many are due at once they mostly share a few
# expressions and the same slot (10,000 schedules "0 9 * * *" due at 09:00), so the answer is computed once per
# (expression, zone, instant) instead of once per schedule. Pure arithmetic: a cached answer is never stale.
@lru_cache(maxsize=8192)
def _next_after_cached(expression: CronExpression, after: datetime) -> datetime | None:
    return expression._next_after(after)


def next_after_cache_clear() -> None:
    """Forget the cached answers (bench/next_fire.py measures the computation, not the lookup)."""
    _next_after_cached.cache_clear()


@lru_cache(maxsize=4096)
def _template(expression: str) -> CronSim:
    return CronSim(expression, datetime(2000, 1, 1))


def _sim(expression: str, after: datetime) -> CronSim:
    """A cronsim iterator at ``after`` (naive), without parsing the expression again."""
    sim: CronSim = CronSim.__new__(CronSim)
    sim.__dict__.update(_template(expression).__dict__)
    sim.dt = after.replace(microsecond=0)
    return sim


def _naive_iter(expression: str, after: datetime) -> Iterator[datetime]:
    return iter(_sim(expression, after))


def _naive_next(expression: str, after: datetime) -> datetime | None:
    try:
        return next(_sim(expression, after))
    except StopIteration:
        return None


def _offset(instant: datetime, tz: ZoneInfo) -> timedelta:
    off = instant.astimezone(tz).utcoffset()
    assert off is not None
    return off


@lru_cache(maxsize=8192)
def _transitions_in_year(zone: str, year: int) -> tuple[datetime, ...]:
    """Every instant T in (Jan 1 of ``year``, Jan 1 of ``year + 1``] (UTC) where the zone's UTC offset changes.

    zoneinfo does not expose its transition table, so it is probed every few hours and each change is narrowed
    down to the second by bisection; cached per zone and year, it costs about a millisecond once.
    """
    if year >= _MAX_YEAR:
        return ()
    tz = ZoneInfo(zone)
    end = datetime(year + 1, 1, 1, tzinfo=UTC)
    low = datetime(year, 1, 1, tzinfo=UTC)
    low_offset = _offset(low, tz)
    found: list[datetime] = []
    while low < end:
        high = min(low + _PROBE_STEP, end)
        high_offset = _offset(high, tz)
        if high_offset != low_offset:
            left, right = low, high
            while right - left > timedelta(seconds=1):
                mid = left + timedelta(seconds=(right - left).total_seconds() // 2)
                if _offset(mid, tz) == low_offset:
                    left = mid
                else:
                    right = mid
            found.append(right)
        low, low_offset = high, high_offset
    return tuple(found)


def _next_transition(start: datetime, end: datetime, zone: str) -> datetime | None:
    """The first instant in (start, end] where the zone's UTC offset changes, or None."""
    if end <= start:
        return None
    for year in range(start.year, min(end.year, _MAX_YEAR) + 1):
        table = _transitions_in_year(zone, year)
        index = bisect.bisect_right(table, start)
        if index < len(table):
            return table[index] if table[index] <= end else None
    return None


def _wall_to_instant_first(wall: datetime, zone: str) -> datetime:
    """A local wall time's instant: its first occurrence, or the end of the gap if it does not exist."""
    tz = ZoneInfo(zone)
    instant = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) == wall:
        return instant
    # Inside a spring-forward gap: fold=0 and fold=1 read the wall time with the offsets from either side of the
    # transition, so the transition lies between them; the first valid instant after the gap is the transition.
    other = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    low, high = min(instant, other), max(instant, other)
    transition = _next_transition(low, high, zone)
    return transition if transition is not None else high


@lru_cache(maxsize=2048)
def parse(expression: str, timezone: str) -> CronExpression:
    return CronExpression(normalize(expression), timezone)
