"""Daylight-saving rules (docs/time.md), checked against the zones' real 2026 transitions:

* America/New_York   2026-03-08 02:00 EST -> 03:00 EDT (07:00Z);  2026-11-01 02:00 EDT -> 01:00 EST (06:00Z)
* Europe/London      2026-03-29 01:00 GMT -> 02:00 BST (01:00Z);  2026-10-25 02:00 BST -> 01:00 GMT (01:00Z)
* Australia/Sydney   2026-04-05 03:00 AEDT -> 02:00 AEST (04-04 16:00Z);  2026-10-04 02:00 AEST -> 03:00 AEDT
  (10-03 16:00Z)
* Australia/Lord_Howe 2026-10-04 02:00 -> 02:30 (+10:30 -> +11:00, 10-03 15:30Z): a half-hour shift

Wall-clock expressions (fixed minute and hour) follow Debian cron: a time in the gap fires once at the end of the
gap, a repeated time fires once at its first occurrence. Elapsed-time expressions (* or a step in minute or hour)
fire at every real instant whose local time matches: none in the gap, twice in a repeated hour.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice, pairwise
from zoneinfo import ZoneInfo

import pytest

from schedules.cron import parse
from schedules.triggers import Trigger, TriggerKind

NY, LONDON, SYDNEY = "America/New_York", "Europe/London", "Australia/Sydney"


def fires(expression: str, zone: str, after: str, count: int) -> list[str]:
    expr = parse(expression, zone)
    start = datetime.fromisoformat(after)
    return [t.astimezone(ZoneInfo(zone)).isoformat() for t in islice(expr.iter_after(start), count)]


# -- spring forward: wall-clock ---------------------------------------------------------------------------------


def test_cron_in_dst_gap_fires_once() -> None:
    # 02:30 does not exist in New York on 8 March: it fires once, at 03:00 EDT, then normally.
    assert fires("30 2 * * *", NY, "2026-03-07T12:00:00+00:00", 3) == [
        "2026-03-08T03:00:00-04:00",
        "2026-03-09T02:30:00-04:00",
        "2026-03-10T02:30:00-04:00",
    ]


def test_cron_several_slots_in_dst_gap_fire_once_together() -> None:
    assert fires("0,15,30,45 2 * * *", NY, "2026-03-08T06:00:00+00:00", 3) == [
        "2026-03-08T03:00:00-04:00",
        "2026-03-09T02:00:00-04:00",
        "2026-03-09T02:15:00-04:00",
    ]


def test_cron_gap_slot_and_the_slot_at_the_end_of_the_gap_fire_once() -> None:
    # 02:30 moves to 03:00, which is itself a slot: one fire at 03:00, then 03:30.
    assert fires("0,30 2,3 * * *", NY, "2026-03-08T06:00:00+00:00", 3) == [
        "2026-03-08T03:00:00-04:00",
        "2026-03-08T03:30:00-04:00",
        "2026-03-09T02:00:00-04:00",
    ]


def test_cron_slots_around_the_gap_keep_their_wall_clock_time() -> None:
    assert fires("30 1,3 * * *", NY, "2026-03-08T05:00:00+00:00", 2) == [
        "2026-03-08T01:30:00-05:00",
        "2026-03-08T03:30:00-04:00",
    ]


def test_cron_in_london_gap_fires_at_the_end_of_the_gap() -> None:
    # London skips 01:00-02:00 on 29 March.
    assert fires("30 1 * * *", LONDON, "2026-03-28T12:00:00+00:00", 2) == [
        "2026-03-29T02:00:00+01:00",
        "2026-03-30T01:30:00+01:00",
    ]


def test_cron_in_sydney_gap_fires_at_the_end_of_the_gap() -> None:
    # Sydney skips 02:00-03:00 on 4 October; 02:00 itself does not exist.
    assert fires("0 2 * * *", SYDNEY, "2026-10-03T00:00:00+00:00", 2) == [
        "2026-10-04T03:00:00+11:00",
        "2026-10-05T02:00:00+11:00",
    ]
    assert fires("30 2 * * *", SYDNEY, "2026-10-03T00:00:00+00:00", 1) == ["2026-10-04T03:00:00+11:00"]


def test_cron_in_half_hour_gap_fires_at_the_end_of_the_gap() -> None:
    assert fires("15 2 * * *", "Australia/Lord_Howe", "2026-10-03T00:00:00+00:00", 2) == [
        "2026-10-04T02:30:00+11:00",
        "2026-10-05T02:15:00+11:00",
    ]


def test_cron_with_seconds_in_dst_gap_fires_once() -> None:
    assert fires("0,30 30 2 * * *", NY, "2026-03-08T06:00:00+00:00", 3) == [
        "2026-03-08T03:00:00-04:00",
        "2026-03-09T02:30:00-04:00",
        "2026-03-09T02:30:30-04:00",
    ]


# -- fall back: wall-clock --------------------------------------------------------------------------------------


def test_cron_in_repeated_hour_fires_once_at_first_occurrence() -> None:
    assert fires("30 1 * * *", NY, "2026-10-31T12:00:00+00:00", 2) == [
        "2026-11-01T01:30:00-04:00",
        "2026-11-02T01:30:00-05:00",
    ]


def test_cron_slots_in_repeated_hour_fire_once_each() -> None:
    assert fires("0,30 1,2 * * *", NY, "2026-11-01T04:00:00+00:00", 5) == [
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:30:00-04:00",
        "2026-11-01T02:00:00-05:00",
        "2026-11-01T02:30:00-05:00",
        "2026-11-02T01:00:00-05:00",
    ]


def test_cron_asked_during_the_second_occurrence_waits_for_the_next_day() -> None:
    # At 01:10 EST (the second 01:10) the 01:30 slot already fired at 01:30 EDT.
    assert fires("30 1 * * *", NY, "2026-11-01T06:10:00+00:00", 1) == ["2026-11-02T01:30:00-05:00"]


def test_cron_in_london_repeated_hour_fires_once() -> None:
    assert fires("30 1 * * *", LONDON, "2026-10-24T12:00:00+00:00", 2) == [
        "2026-10-25T01:30:00+01:00",
        "2026-10-26T01:30:00+00:00",
    ]


def test_cron_in_sydney_repeated_hour_fires_once() -> None:
    # Sydney repeats 02:00-03:00 on 5 April.
    assert fires("30 2 * * *", SYDNEY, "2026-04-04T00:00:00+00:00", 2) == [
        "2026-04-05T02:30:00+11:00",
        "2026-04-06T02:30:00+10:00",
    ]


# -- elapsed time: * or a step in minute or hour ----------------------------------------------------------------


def test_cron_elapsed_slots_in_dst_gap_do_not_exist() -> None:
    assert fires("*/30 * * * *", NY, "2026-03-08T06:00:00+00:00", 4) == [
        "2026-03-08T01:30:00-05:00",
        "2026-03-08T03:00:00-04:00",
        "2026-03-08T03:30:00-04:00",
        "2026-03-08T04:00:00-04:00",
    ]


def test_cron_elapsed_hourly_skips_the_missing_hour() -> None:
    assert fires("15 * * * *", NY, "2026-03-08T06:00:00+00:00", 3) == [
        "2026-03-08T01:15:00-05:00",
        "2026-03-08T03:15:00-04:00",
        "2026-03-08T04:15:00-04:00",
    ]


def test_cron_every_minute_of_a_missing_hour_waits_for_the_next_day() -> None:
    assert fires("* 2 * * *", NY, "2026-03-08T06:58:00+00:00", 1) == ["2026-03-09T02:00:00-04:00"]


def test_cron_elapsed_fires_each_real_occurrence_in_repeated_hour() -> None:
    assert fires("*/30 * * * *", NY, "2026-11-01T04:45:00+00:00", 5) == [
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:30:00-04:00",
        "2026-11-01T01:00:00-05:00",
        "2026-11-01T01:30:00-05:00",
        "2026-11-01T02:00:00-05:00",
    ]


def test_cron_elapsed_in_one_repeated_hour_fires_in_both() -> None:
    assert fires("*/20 1 * * *", NY, "2026-11-01T04:00:00+00:00", 7) == [
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:20:00-04:00",
        "2026-11-01T01:40:00-04:00",
        "2026-11-01T01:00:00-05:00",
        "2026-11-01T01:20:00-05:00",
        "2026-11-01T01:40:00-05:00",
        "2026-11-02T01:00:00-05:00",
    ]


def test_cron_hourly_in_london_fall_back_fires_every_real_hour() -> None:
    assert fires("@hourly", LONDON, "2026-10-24T22:30:00+00:00", 4) == [
        "2026-10-25T00:00:00+01:00",
        "2026-10-25T01:00:00+01:00",
        "2026-10-25T01:00:00+00:00",
        "2026-10-25T02:00:00+00:00",
    ]


def test_cron_hourly_in_sydney_fall_back_fires_every_real_hour() -> None:
    assert fires("0 * * * *", SYDNEY, "2026-04-04T14:30:00+00:00", 3) == [
        "2026-04-05T02:00:00+11:00",
        "2026-04-05T02:00:00+10:00",
        "2026-04-05T03:00:00+10:00",
    ]


def test_cron_elapsed_in_sydney_gap_do_not_exist() -> None:
    assert fires("*/30 * * * *", SYDNEY, "2026-10-03T15:00:00+00:00", 3) == [
        "2026-10-04T01:30:00+10:00",
        "2026-10-04T03:00:00+11:00",
        "2026-10-04T03:30:00+11:00",
    ]


def test_cron_every_ten_seconds_keeps_real_spacing_across_fall_back() -> None:
    expr = parse("*/10 * * * * *", NY)
    instants = list(islice(expr.iter_after(datetime(2026, 11, 1, 5, 59, 30, tzinfo=UTC)), 6))
    assert [t.isoformat() for t in instants[2:4]] == ["2026-11-01T06:00:00+00:00", "2026-11-01T06:00:10+00:00"]
    assert {b - a for a, b in pairwise(instants)} == {timedelta(seconds=10)}
    local = [t.astimezone(ZoneInfo(NY)).strftime("%H:%M:%S%z") for t in instants[1:4]]
    assert local == ["01:59:50-0400", "01:00:00-0500", "01:00:10-0500"]


@pytest.mark.parametrize(
    ("zone", "transition"),
    [
        (NY, "2026-03-08T07:00:00+00:00"),
        (NY, "2026-11-01T06:00:00+00:00"),
        (LONDON, "2026-03-29T01:00:00+00:00"),
        (LONDON, "2026-10-25T01:00:00+00:00"),
        (SYDNEY, "2026-04-04T16:00:00+00:00"),
        (SYDNEY, "2026-10-03T16:00:00+00:00"),
    ],
)
def test_cron_every_minute_counts_real_minutes_across_a_transition(zone: str, transition: str) -> None:
    # Real time has 60 minutes in every hour, whatever the clock does: one fire per real minute, no gap, no repeat.
    expr = parse("* * * * *", zone)
    start = datetime.fromisoformat(transition) - timedelta(hours=12)
    instants = list(islice(expr.iter_after(start), 24 * 60))
    assert instants[0] == start + timedelta(minutes=1)
    assert {b - a for a, b in pairwise(instants)} == {timedelta(minutes=1)}


@pytest.mark.parametrize(
    ("zone", "day", "fires_that_day"),
    [
        (NY, "2026-03-08", 23),  # spring forward: a 23-hour day
        (NY, "2026-11-01", 25),  # fall back: a 25-hour day
        (LONDON, "2026-03-29", 23),
        (LONDON, "2026-10-25", 25),
        (SYDNEY, "2026-10-04", 23),
        (SYDNEY, "2026-04-05", 25),
        ("UTC", "2026-03-08", 24),
        ("Asia/Shanghai", "2026-03-08", 24),
    ],
)
def test_cron_hourly_fires_once_per_real_hour_of_the_local_day(zone: str, day: str, fires_that_day: int) -> None:
    tz = ZoneInfo(zone)
    midnight = datetime.fromisoformat(day).replace(tzinfo=tz)
    next_midnight = (midnight + timedelta(days=1)).replace(tzinfo=tz)
    expr = parse("0 * * * *", zone)
    instants = []
    for t in expr.iter_after(midnight.astimezone(UTC) - timedelta(seconds=1)):
        if t >= next_midnight.astimezone(UTC):
            break
        instants.append(t)
    assert len(instants) == fires_that_day


@pytest.mark.parametrize(
    ("zone", "day", "fires_that_day"),
    [(NY, "2026-03-08", 1), (NY, "2026-11-01", 1), (SYDNEY, "2026-10-04", 1), (SYDNEY, "2026-04-05", 1)],
)
def test_cron_daily_wall_clock_fires_once_on_dst_days(zone: str, day: str, fires_that_day: int) -> None:
    # Whatever the hour, a daily fixed-time job fires exactly once on a transition day.
    tz = ZoneInfo(zone)
    midnight = datetime.fromisoformat(day).replace(tzinfo=tz).astimezone(UTC)
    end = (datetime.fromisoformat(day) + timedelta(days=1)).replace(tzinfo=tz).astimezone(UTC)
    for hour in range(24):
        for minute in (0, 30):
            expr = parse(f"{minute} {hour} * * *", zone)
            same_day = [t for t in islice(expr.iter_after(midnight - timedelta(seconds=1)), 3) if t < end]
            assert len(same_day) == fires_that_day, (hour, minute)


def test_trigger_previews_dst_gap_like_the_cron_rule() -> None:
    trigger = Trigger(kind=TriggerKind.CRON, timezone=NY, cron="30 2 * * *")
    slots = trigger.preview(after=datetime(2026, 3, 7, 12, tzinfo=UTC), count=2)
    assert slots == [datetime(2026, 3, 8, 7, 0, tzinfo=UTC), datetime(2026, 3, 9, 6, 30, tzinfo=UTC)]
