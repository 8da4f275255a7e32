"""Cron syntax, readable errors and next fire instants in zones without DST (DST rules: test_dst.py).

Expected instants are written in the zone's local time with their offset, checked by hand against a calendar:
2026-01-01 is a Thursday, 2028 is the next leap year.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice, pairwise
from zoneinfo import ZoneInfo

import pytest

from schedules.cron import CronError, normalize, parse


def fires(expression: str, zone: str, after: str, count: int) -> list[str]:
    """The next ``count`` fire instants after ``after`` (ISO), as local ISO strings with their offset."""
    expr = parse(expression, zone)
    out: list[str] = []
    for instant in expr.iter_after(datetime.fromisoformat(after)):
        out.append(instant.astimezone(ZoneInfo(zone)).isoformat())
        if len(out) == count:
            break
    return out


JAN1 = "2026-01-01T00:00:00+00:00"


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        # every minute / every second, across an hour, a day and a year boundary
        ("* * * * *", ["2026-01-01T00:01:00+00:00", "2026-01-01T00:02:00+00:00", "2026-01-01T00:03:00+00:00"]),
        ("* * * * * *", ["2026-01-01T00:00:01+00:00", "2026-01-01T00:00:02+00:00", "2026-01-01T00:00:03+00:00"]),
        # lists, ranges, steps (a step on a range, and from a start value to the end of the field)
        ("5,35 * * * *", ["2026-01-01T00:05:00+00:00", "2026-01-01T00:35:00+00:00", "2026-01-01T01:05:00+00:00"]),
        ("10-50/20 * * * *", ["2026-01-01T00:10:00+00:00", "2026-01-01T00:30:00+00:00", "2026-01-01T00:50:00+00:00"]),
        ("5/20 * * * *", ["2026-01-01T00:05:00+00:00", "2026-01-01T00:25:00+00:00", "2026-01-01T00:45:00+00:00"]),
        ("*/15 9-17 * * *", ["2026-01-01T09:00:00+00:00", "2026-01-01T09:15:00+00:00", "2026-01-01T09:30:00+00:00"]),
        # names, upper or lower case
        ("0 12 1 JAN,JUL *", ["2026-01-01T12:00:00+00:00", "2026-07-01T12:00:00+00:00", "2027-01-01T12:00:00+00:00"]),
        ("0 12 1 jan,jul *", ["2026-01-01T12:00:00+00:00", "2026-07-01T12:00:00+00:00", "2027-01-01T12:00:00+00:00"]),
        ("0 9 * * MON-FRI", ["2026-01-01T09:00:00+00:00", "2026-01-02T09:00:00+00:00", "2026-01-05T09:00:00+00:00"]),
        # Sunday is 0 and 7
        ("0 0 * * SUN", ["2026-01-04T00:00:00+00:00", "2026-01-11T00:00:00+00:00", "2026-01-18T00:00:00+00:00"]),
        ("0 0 * * 7", ["2026-01-04T00:00:00+00:00", "2026-01-11T00:00:00+00:00", "2026-01-18T00:00:00+00:00"]),
        # six fields: a leading seconds field
        ("30 0 12 * * *", ["2026-01-01T12:00:30+00:00", "2026-01-02T12:00:30+00:00", "2026-01-03T12:00:30+00:00"]),
        ("*/20 * * * * *", ["2026-01-01T00:00:20+00:00", "2026-01-01T00:00:40+00:00", "2026-01-01T00:01:00+00:00"]),
        # macros
        ("@yearly", ["2027-01-01T00:00:00+00:00", "2028-01-01T00:00:00+00:00", "2029-01-01T00:00:00+00:00"]),
        ("@annually", ["2027-01-01T00:00:00+00:00", "2028-01-01T00:00:00+00:00", "2029-01-01T00:00:00+00:00"]),
        ("@monthly", ["2026-02-01T00:00:00+00:00", "2026-03-01T00:00:00+00:00", "2026-04-01T00:00:00+00:00"]),
        ("@weekly", ["2026-01-04T00:00:00+00:00", "2026-01-11T00:00:00+00:00", "2026-01-18T00:00:00+00:00"]),
        ("@daily", ["2026-01-02T00:00:00+00:00", "2026-01-03T00:00:00+00:00", "2026-01-04T00:00:00+00:00"]),
        ("@midnight", ["2026-01-02T00:00:00+00:00", "2026-01-03T00:00:00+00:00", "2026-01-04T00:00:00+00:00"]),
        ("@hourly", ["2026-01-01T01:00:00+00:00", "2026-01-01T02:00:00+00:00", "2026-01-01T03:00:00+00:00"]),
        # L (last day), LW (last weekday: Jan 31 2026 is a Saturday, Feb 28 a Saturday), # (nth weekday), nL
        ("0 0 L * *", ["2026-01-31T00:00:00+00:00", "2026-02-28T00:00:00+00:00", "2026-03-31T00:00:00+00:00"]),
        ("0 0 LW * *", ["2026-01-30T00:00:00+00:00", "2026-02-27T00:00:00+00:00", "2026-03-31T00:00:00+00:00"]),
        ("0 9 * * MON#1", ["2026-01-05T09:00:00+00:00", "2026-02-02T09:00:00+00:00", "2026-03-02T09:00:00+00:00"]),
        ("0 9 * * 5L", ["2026-01-30T09:00:00+00:00", "2026-02-27T09:00:00+00:00", "2026-03-27T09:00:00+00:00"]),
        ("0 9 * * FRIL", ["2026-01-30T09:00:00+00:00", "2026-02-27T09:00:00+00:00", "2026-03-27T09:00:00+00:00"]),
        # both day fields restricted: a day matches if either matches (the 13th, a Tuesday, or any Friday)
        (
            "0 0 13 * FRI",
            [
                "2026-01-02T00:00:00+00:00",
                "2026-01-09T00:00:00+00:00",
                "2026-01-13T00:00:00+00:00",
                "2026-01-16T00:00:00+00:00",
            ],
        ),
        # one day field starts with * (Debian cron): both must match; odd days that are Fridays
        ("0 0 */2 * FRI", ["2026-01-09T00:00:00+00:00", "2026-01-23T00:00:00+00:00", "2026-02-13T00:00:00+00:00"]),
        # end of month: only months with a 31st
        (
            "0 0 31 * *",
            [
                "2026-01-31T00:00:00+00:00",
                "2026-03-31T00:00:00+00:00",
                "2026-05-31T00:00:00+00:00",
                "2026-07-31T00:00:00+00:00",
                "2026-08-31T00:00:00+00:00",
                "2026-10-31T00:00:00+00:00",
                "2026-12-31T00:00:00+00:00",
                "2027-01-31T00:00:00+00:00",
            ],
        ),
        # 29 February: leap years only
        ("0 0 29 2 *", ["2028-02-29T00:00:00+00:00", "2032-02-29T00:00:00+00:00", "2036-02-29T00:00:00+00:00"]),
    ],
)
def test_cron_syntax_fires_at_expected_instants_in_utc(expression: str, expected: list[str]) -> None:
    assert fires(expression, "UTC", JAN1, len(expected)) == expected


def test_cron_last_day_of_february_in_a_leap_year_is_the_29th() -> None:
    assert fires("0 0 L 2 *", "UTC", JAN1, 3) == [
        "2026-02-28T00:00:00+00:00",
        "2027-02-28T00:00:00+00:00",
        "2028-02-29T00:00:00+00:00",
    ]


def test_cron_every_minute_crosses_the_year_boundary() -> None:
    assert fires("* * * * *", "UTC", "2026-12-31T23:58:30+00:00", 3) == [
        "2026-12-31T23:59:00+00:00",
        "2027-01-01T00:00:00+00:00",
        "2027-01-01T00:01:00+00:00",
    ]


def test_cron_every_second_crosses_the_year_boundary() -> None:
    assert fires("* * * * * *", "UTC", "2026-12-31T23:59:58+00:00", 3) == [
        "2026-12-31T23:59:59+00:00",
        "2027-01-01T00:00:00+00:00",
        "2027-01-01T00:00:01+00:00",
    ]


def test_cron_new_year_is_evaluated_in_the_schedule_zone() -> None:
    # Midnight of 1 January in Shanghai (UTC+8) is still 31 December in UTC.
    instants = parse("0 0 1 1 *", "Asia/Shanghai").next_after(datetime(2026, 12, 31, 12, tzinfo=UTC))
    assert instants == datetime(2026, 12, 31, 16, tzinfo=UTC)


def test_cron_last_day_of_the_year() -> None:
    assert fires("59 23 31 12 *", "UTC", "2026-12-31T23:58:00+00:00", 2) == [
        "2026-12-31T23:59:00+00:00",
        "2027-12-31T23:59:00+00:00",
    ]


@pytest.mark.parametrize("zone", ["UTC", "Asia/Shanghai"])
def test_cron_weekday_mornings_in_a_zone_without_dst(zone: str) -> None:
    offset = "+00:00" if zone == "UTC" else "+08:00"
    # 2026-03-06 is a Friday; the weekend is skipped.
    assert fires("0 8 * * 1-5", zone, "2026-03-05T12:00:00+00:00", 3) == [
        f"2026-03-06T08:00:00{offset}",
        f"2026-03-09T08:00:00{offset}",
        f"2026-03-10T08:00:00{offset}",
    ]


@pytest.mark.parametrize("zone", ["UTC", "Asia/Shanghai"])
@pytest.mark.parametrize("expression", ["30 2 * * *", "0 */6 * * *", "*/30 * * * *"])
def test_cron_without_dst_keeps_exact_real_spacing_all_year(zone: str, expression: str) -> None:
    expr = parse(expression, zone)
    period = {"30 2 * * *": 86400, "0 */6 * * *": 6 * 3600, "*/30 * * * *": 1800}[expression]
    instants = list(islice(expr.iter_after(datetime(2026, 1, 1, tzinfo=UTC)), 365 * 86400 // period))
    gaps = {(b - a).total_seconds() for a, b in pairwise(instants)}
    assert gaps == {period}


def test_cron_next_fire_is_strictly_after_the_given_instant() -> None:
    expr = parse("0 * * * *", "UTC")
    on_slot = datetime(2026, 1, 1, 5, tzinfo=UTC)
    assert expr.next_after(on_slot) == datetime(2026, 1, 1, 6, tzinfo=UTC)
    assert expr.next_after(on_slot - timedelta(microseconds=1)) == on_slot


def test_cron_fire_instants_are_utc() -> None:
    instant = parse("0 8 * * *", "Asia/Shanghai").next_after(datetime(2026, 1, 1, tzinfo=UTC))
    assert instant is not None
    assert instant.tzinfo is UTC
    assert instant == datetime(2026, 1, 1, 0, 0, tzinfo=UTC) + timedelta(days=1)


def test_cron_next_after_accepts_any_aware_datetime() -> None:
    expr = parse("0 12 * * *", "UTC")
    shanghai = datetime(2026, 1, 1, 19, 0, tzinfo=ZoneInfo("Asia/Shanghai"))  # 11:00 UTC
    assert expr.next_after(shanghai) == datetime(2026, 1, 1, 12, tzinfo=UTC)


def test_cron_rare_expression_is_found_decades_ahead() -> None:
    # A 5th Monday in February needs a leap year whose 1 February is a Monday: 2044, 2072, then 2112 (2100 is
    # not a leap year).
    expr = parse("0 0 * 2 MON#5", "UTC")
    assert list(islice(expr.iter_after(datetime(2026, 1, 1, tzinfo=UTC)), 3)) == [
        datetime(2044, 2, 29, tzinfo=UTC),
        datetime(2072, 2, 29, tzinfo=UTC),
        datetime(2112, 2, 29, tzinfo=UTC),
    ]


@pytest.mark.parametrize(
    ("expression", "normalized"),
    [
        ("  0   8 * *  1-5 ", "0 8 * * 1-5"),
        ("0 0 * jan,jul mon-fri", "0 0 * JAN,JUL MON-FRI"),
        ("@DAILY", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("0 0 l * *", "0 0 L * *"),
        ("0 0 * * fril", "0 0 * * 5L"),
    ],
)
def test_cron_normalize_squeezes_spaces_expands_macros_and_upper_cases(expression: str, normalized: str) -> None:
    assert normalize(expression) == normalized


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("61 * * * *", "minute: 61 is outside 0-59"),
        ("* 24 * * *", "hour: 24 is outside 0-23"),
        ("* * 0 * *", "day-of-month: 0 is outside 1-31"),
        ("* * 32 * *", "day-of-month: 32 is outside 1-31"),
        ("* * * 13 *", "month: 13 is outside 1-12"),
        ("* * * * 8", "day-of-week: 8 is outside 0-7"),
        ("60 * * * * *", "second: 60 is outside 0-59"),
        ("* * * FOO *", "month: 'FOO' is not a number (or a name like JAN)"),
        ("* * * * FUN", "day-of-week: 'FUN' is not a number (or a name like MON)"),
        ("x * * * *", "minute: 'x' is not a number"),
        ("\u0663 * * * *", "minute: '\u0663' is not a number"),
        ("? * * * *", "minute: '?' is not a number; ? is not supported, write *"),
        ("*/0 * * * *", "minute: step in '*/0' must be at least 1"),
        ("*/x * * * *", "minute: step 'x' in '*/x' is not a number"),
        ("*/61 * * * *", "minute: step 61 in '*/61' is larger than the range 0-59"),
        ("5-1 * * * *", "minute: range '5-1' goes backwards (5 > 1)"),
        ("* * * * FRI-MON", "day-of-week: range 'FRI-MON' goes backwards (5 > 1)"),
        ("1,,2 * * * *", "minute: empty item in a list"),
        ("* * 30 2 *", "day-of-month: no chosen month has that many days"),
        ("* * 31 4,6,9,11 *", "day-of-month: no chosen month has that many days"),
        ("* * 15W * *", "day-of-month: in '15W', W is supported only as LW (the last weekday of the month)"),
        ("* * L-2 * *", "day-of-month: in 'L-2', L stands alone (L = the last day, LW = the last weekday)"),
        ("* * * * L", "day-of-week: L needs a day before it (5L = the last Friday of the month)"),
        ("* * * * 1#6", "day-of-week: in '1#6' the week number must be 1-5"),
        ("* * * * 1#x", "day-of-week: in '1#x' the week number must be 1-5"),
        ("", "expression: is empty"),
        ("   ", "expression: is empty"),
        ("* * * *", "expression: has 4 fields; write 5"),
        ("* * * * * * *", "expression: has 7 fields; write 5"),
        ("@reboot", "expression: unknown macro '@reboot'; use one of @yearly"),
    ],
)
def test_cron_invalid_expression_names_the_field_and_the_reason(expression: str, message: str) -> None:
    with pytest.raises(CronError) as caught:
        normalize(expression)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("expression", "wall_clock"),
    [
        ("30 2 * * *", True),
        ("0,30 1-3 * * *", True),
        ("0 9 * * MON-FRI", True),
        ("0 30 2 * * *", True),  # six fields: second, minute, hour
        ("15 10 * * * *", False),  # second 15, minute 10, hour *
        ("* 2 * * *", False),
        ("15 * * * *", False),
        ("*/5 * * * *", False),
        ("0 */2 * * *", False),
        ("0 1-23/2 * * *", False),
        ("@hourly", False),
        ("@daily", True),
    ],
)
def test_cron_wall_clock_means_fixed_minute_and_hour(expression: str, wall_clock: bool) -> None:
    assert parse(expression, "UTC").is_wall_clock is wall_clock


@pytest.mark.parametrize(
    ("expression", "gap"),
    [
        ("*/5 * * * * *", 5),
        ("*/10 * * * * *", 10),
        ("0,30 * * * * *", 30),
        ("0,55 * * * * *", 5),  # 00:55 to the next minute's 00:00
        ("0,55 0 * * * *", 55),  # minute 0 only: the next fire after :00:55 is an hour later
        ("0 * * * * *", None),
        ("* * * * *", None),
    ],
)
def test_cron_min_gap_seconds_reads_the_seconds_field(expression: str, gap: int | None) -> None:
    assert parse(expression, "UTC").min_gap_seconds() == gap
