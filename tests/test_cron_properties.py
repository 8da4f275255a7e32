"""Property tests over random valid expressions and zones, against a brute-force reference.

The reference walks every minute (or second) of a window and applies the rules of docs/time.md literally:
elapsed-time expressions fire at each real instant whose local time matches; wall-clock expressions fire at the
first real occurrence of each matching local time, and a local time inside a gap fires at the end of the gap.
Windows are placed around real transitions of DST zones, so the rules are exercised, not just the easy days.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice, pairwise
from zoneinfo import ZoneInfo

from cronsim import CronSim
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from schedules.cron import CronError, normalize, parse
from schedules.triggers import Trigger, TriggerKind

PROPERTY_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Real 2026 transitions (UTC), to place windows on them; UTC and Shanghai have none.
TRANSITIONS = {
    "America/New_York": ["2026-03-08T07:00:00", "2026-11-01T06:00:00"],
    "Europe/London": ["2026-03-29T01:00:00", "2026-10-25T01:00:00"],
    "Australia/Sydney": ["2026-04-04T16:00:00", "2026-10-03T16:00:00"],
    "Australia/Lord_Howe": ["2026-04-04T15:00:00", "2026-10-03T15:30:00"],
    "America/Santiago": ["2026-04-05T03:00:00", "2026-09-06T04:00:00"],
    "UTC": ["2026-06-01T00:00:00"],
    "Asia/Shanghai": ["2026-06-01T00:00:00"],
}
ZONES = sorted(TRANSITIONS)


@st.composite
def field(draw: st.DrawFn, low: int, high: int, *, likely: tuple[int, int] | None = None) -> str:
    value = st.integers(low, high) if likely is None else st.one_of(st.integers(*likely), st.integers(low, high))
    kind = draw(st.sampled_from(["*", "step", "value", "list", "range", "range_step"]))
    if kind == "*":
        return "*"
    if kind == "step":
        return f"*/{draw(st.integers(1, min(30, high - low + 1)))}"
    if kind == "value":
        return str(draw(value))
    if kind == "list":
        return ",".join(str(v) for v in sorted(draw(st.sets(value, min_size=2, max_size=4))))
    a, b = sorted((draw(value), draw(value)))
    if kind == "range":
        return f"{a}-{b}"
    return f"{a}-{b}/{draw(st.integers(1, 10))}"


@st.composite
def expressions(draw: st.DrawFn, *, seconds: bool = False) -> str:
    minute = draw(field(0, 59, likely=(0, 3)))
    hour = draw(field(0, 23, likely=(0, 4)))
    day = draw(st.sampled_from(["*", "*", "*", "L", "1-15", "*/2", "5,20"]))
    month = draw(st.sampled_from(["*", "*", "*", "3,4,9,10,11", "*/2"]))
    weekday = draw(st.sampled_from(["*", "*", "*", "1-5", "0,6", "SUN", "MON#1"]))
    parts = [minute, hour, day, month, weekday]
    if seconds:
        parts.insert(0, draw(field(0, 59)))
    text = " ".join(parts)
    try:
        return normalize(text)
    except CronError:
        assume(False)
        raise


@st.composite
def windows(draw: st.DrawFn) -> tuple[str, datetime]:
    zone = draw(st.sampled_from(ZONES))
    transition = datetime.fromisoformat(draw(st.sampled_from(TRANSITIONS[zone]))).replace(tzinfo=UTC)
    shift = draw(st.integers(-36 * 3600, 12 * 3600))
    micro = draw(st.sampled_from([0, 0, 1, 500_000]))
    return zone, transition + timedelta(seconds=shift, microseconds=micro)


# -- the reference ------------------------------------------------------------------------------------------------


def _matcher(expression: str) -> CronSim:
    return CronSim(expression, datetime(2000, 1, 1))


def _matches(sim: CronSim, wall: datetime) -> bool:
    return (
        wall.second in sim.seconds
        and wall.minute in sim.minutes
        and wall.hour in sim.hours
        and wall.month in sim.months
        and sim.match_day(wall.date())
    )


def _wall(instant: datetime, tz: ZoneInfo) -> datetime:
    return instant.astimezone(tz).replace(tzinfo=None)


def _first_instant(wall: datetime, tz: ZoneInfo) -> datetime:
    readings = [wall.replace(tzinfo=tz, fold=fold).astimezone(UTC) for fold in (0, 1)]
    real = [r for r in readings if _wall(r, tz) == wall]
    if real:
        return min(real)  # the first occurrence of a repeated time
    # In a gap: the end of the gap is the first instant whose local time is past ``wall``.
    low, high = min(readings), max(readings)
    while high - low > timedelta(seconds=1):
        mid = low + (high - low) / 2
        mid = mid.replace(microsecond=0)
        if _wall(mid, tz) > wall:
            high = mid
        else:
            low = mid
    return high


def reference(expression: str, zone: str, after: datetime, until: datetime) -> list[datetime]:
    tz = ZoneInfo(zone)
    sim = _matcher(expression)
    step = timedelta(seconds=1) if len(expression.split()) == 6 else timedelta(minutes=1)
    unit = int(step.total_seconds())
    minute, hour = expression.split()[-5:-3]
    if not any(ch in minute + hour for ch in "*/"):  # wall-clock: fixed minute and hour
        start = _wall(after, tz).replace(microsecond=0) - timedelta(hours=3)
        start -= timedelta(seconds=start.second % unit)
        stop = _wall(until, tz) + timedelta(hours=3)
        found: set[datetime] = set()
        wall = start
        while wall <= stop:
            if _matches(sim, wall):
                found.add(_first_instant(wall, tz))
            wall += step
        return sorted(t for t in found if after < t <= until)
    instant = after.replace(microsecond=0)
    instant -= timedelta(seconds=int(instant.timestamp()) % unit)
    out = []
    while instant <= until:
        if instant > after and _matches(sim, _wall(instant, tz)):
            out.append(instant)
        instant += step
    return out


def implementation(expression: str, zone: str, after: datetime, horizon: timedelta) -> tuple[list[datetime], datetime]:
    """Up to 300 fires in (after, after + horizon], and the end of the window they cover."""
    until = after + horizon
    fires = []
    for instant in parse(expression, zone).iter_after(after):
        if instant > until:
            break
        fires.append(instant)
        if len(fires) == 300:
            until = instant
            break
    return fires, until


# -- properties ---------------------------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(expression=expressions(), window=windows())
def test_cron_fires_exactly_where_the_dst_rules_say(expression: str, window: tuple[str, datetime]) -> None:
    zone, after = window
    fires, until = implementation(expression, zone, after, timedelta(days=2))
    assert fires == reference(expression, zone, after, until)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expression=expressions(seconds=True), window=windows())
def test_cron_with_seconds_fires_exactly_where_the_dst_rules_say(expression: str, window: tuple[str, datetime]) -> None:
    zone, after = window
    fires, until = implementation(expression, zone, after, timedelta(hours=3))
    assert fires == reference(expression, zone, after, until)


@PROPERTY_SETTINGS
@given(expression=expressions(), window=windows())
def test_cron_fire_instants_strictly_increase_and_never_repeat(expression: str, window: tuple[str, datetime]) -> None:
    zone, after = window
    fires = list(islice(parse(expression, zone).iter_after(after), 60))
    assert all(a < b for a, b in pairwise(fires))
    assert len(set(fires)) == len(fires)
    assert all(t > after and t.tzinfo is UTC for t in fires)


@PROPERTY_SETTINGS
@given(expression=expressions(), window=windows(), probe=st.integers(0, 2 * 86400))
def test_cron_next_after_any_instant_is_the_next_fire_of_the_chain(
    expression: str, window: tuple[str, datetime], probe: int
) -> None:
    # The dispatcher asks from the last slot; the preview and a restarted dispatcher ask from anywhere.
    zone, after = window
    expr = parse(expression, zone)
    chain, _ = implementation(expression, zone, after, timedelta(days=3))
    moment = after + timedelta(seconds=probe)
    later = [t for t in chain if t > moment]
    assume(later)
    assert expr.next_after(moment) == later[0]


@PROPERTY_SETTINGS
@given(expression=st.booleans().flatmap(lambda seconds: expressions(seconds=seconds)))
def test_cron_normalize_is_idempotent(expression: str) -> None:
    assert normalize(expression) == expression


CRON_ALPHABET = "0123456789*/,-LW#? abcdefghijklmnopqrstuvwxyzMONJA@\t"
FIELD_PREFIXES = ("second:", "minute:", "hour:", "day-of-month:", "month:", "day-of-week:", "expression:")


@settings(max_examples=500, deadline=None)
@given(text=st.text(alphabet=CRON_ALPHABET, max_size=40))
def test_cron_any_text_is_valid_or_a_readable_error_naming_the_field(text: str) -> None:
    try:
        normalized = normalize(text)
    except CronError as exc:
        assert str(exc).startswith(FIELD_PREFIXES), str(exc)
        assert "\n" not in str(exc)
        return
    # Whatever is accepted can be evaluated.
    parse(normalized, "Europe/London").next_after(datetime(2026, 1, 1, tzinfo=UTC))


@PROPERTY_SETTINGS
@given(
    anchor_offset=st.integers(0, 10**8),
    interval=st.integers(10, 366 * 86400),
    after_offset=st.integers(-(10**7), 10**9),
    micro=st.integers(0, 999_999),
)
def test_interval_slots_are_anchor_plus_multiples_and_none_is_skipped(
    anchor_offset: int, interval: int, after_offset: int, micro: int
) -> None:
    anchor = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(seconds=anchor_offset)
    trigger = Trigger(kind=TriggerKind.INTERVAL, interval_seconds=interval, start_at=anchor)
    after = anchor + timedelta(seconds=after_offset, microseconds=micro)
    slot = trigger.next_after(after)
    assert slot is not None and slot > after
    elapsed = slot - anchor
    assert elapsed % timedelta(seconds=interval) == timedelta(0)
    assert slot == anchor or slot - timedelta(seconds=interval) <= after


def test_reference_agrees_on_a_known_gap_and_repeat() -> None:
    # The reference itself, on cases worked by hand (test_dst.py): keeps the property tests honest.
    zone = "America/New_York"
    after = datetime(2026, 3, 7, 12, tzinfo=UTC)
    assert reference("30 2 * * *", zone, after, after + timedelta(days=2)) == [
        datetime(2026, 3, 8, 7, 0, tzinfo=UTC),
        datetime(2026, 3, 9, 6, 30, tzinfo=UTC),
    ]
    after = datetime(2026, 11, 1, 4, 45, tzinfo=UTC)
    assert reference("*/30 1 * * *", zone, after, after + timedelta(hours=3)) == [
        datetime(2026, 11, 1, 5, 0, tzinfo=UTC),
        datetime(2026, 11, 1, 5, 30, tzinfo=UTC),
        datetime(2026, 11, 1, 6, 0, tzinfo=UTC),
        datetime(2026, 11, 1, 6, 30, tzinfo=UTC),
    ]
