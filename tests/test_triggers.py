"""Triggers: time zones, validation with readable errors, interval arithmetic, once, bounds, jitter, preview."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice, pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.exceptions import ValidationError
from pytest_django.fixtures import Settings

from echoflow.accounts.models import Organization
from schedules.models import ScheduleState
from schedules.services import schedule_create
from schedules.triggers import Trigger, TriggerKind, jitter_offset, trigger_validate, zone_get

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def errors_of(**kwargs: Any) -> dict[str, str]:
    kwargs.setdefault("timezone", "UTC")
    with pytest.raises(ValidationError) as caught:
        trigger_validate(**kwargs)
    return {field: messages[0] for field, messages in caught.value.message_dict.items()}


# -- time zones ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["UTC", "Asia/Shanghai", "America/New_York", "Europe/London", "Australia/Sydney", "Etc/GMT+5", "US/Eastern"],
)
def test_zone_get_accepts_any_iana_name(name: str) -> None:
    assert zone_get(name) == ZoneInfo(name)


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("America/New_Yrok", "America/New_York"),
        ("asia/shanghai", "Asia/Shanghai"),
        ("Berlin", "Europe/Berlin"),
        ("new york", "America/New_York"),
        ("utc", "UTC"),
        ("Europe/Londn", "Europe/London"),
    ],
)
def test_zone_get_rejects_unknown_name_suggesting_the_closest(name: str, suggestion: str) -> None:
    with pytest.raises(ValidationError) as caught:
        zone_get(name)
    message = caught.value.message_dict["timezone"][0]
    assert message.startswith(f"{name!r} is not a known IANA time zone; did you mean ")
    assert suggestion in message.split("did you mean ")[1].rstrip("?").split(", ")


@pytest.mark.parametrize("name", ["", "Mars/Olympus_Mons", "../../etc/passwd"])
def test_zone_get_rejects_nonsense_with_an_example(name: str) -> None:
    with pytest.raises(ValidationError) as caught:
        zone_get(name)
    assert "use an IANA name like Europe/Berlin" in caught.value.message_dict["timezone"][0]


@pytest.mark.parametrize("name", ["localtime", "right/UTC", "posix/Europe/Berlin", "Factory"])
def test_zone_get_rejects_host_dependent_and_leap_second_zones(name: str) -> None:
    # "localtime" is the host's setting and right/* counts leap seconds: a schedule must not depend on either.
    with pytest.raises(ValidationError):
        zone_get(name)


# -- validation ---------------------------------------------------------------------------------------------------


def test_trigger_validate_reports_the_cron_field_and_reason() -> None:
    assert errors_of(kind="cron", cron="61 * * * *") == {"cron": "minute: 61 is outside 0-59"}


def test_trigger_validate_requires_a_cron_expression() -> None:
    assert errors_of(kind="cron", cron="  ") == {"cron": "is required for a cron trigger"}


def test_trigger_validate_normalizes_the_expression() -> None:
    trigger = trigger_validate(kind="cron", timezone="UTC", cron=" @daily ")
    assert trigger.cron == "0 0 * * *"


def test_trigger_validate_reports_unknown_zone_with_suggestion() -> None:
    errors = errors_of(kind="cron", cron="0 8 * * *", timezone="Asia/Shangai")
    assert errors["timezone"].startswith("'Asia/Shangai' is not a known IANA time zone; did you mean Asia/Shanghai")


def test_trigger_validate_rejects_unknown_kind() -> None:
    assert errors_of(kind="weekly")["trigger_kind"] == "'weekly' is not one of once, interval, cron"


def test_interval_below_minimum_is_rejected_with_the_minimum() -> None:
    assert errors_of(kind="interval", interval_seconds=9) == {"interval_seconds": "9 s is below the minimum of 10 s"}
    assert trigger_validate(kind="interval", timezone="UTC", interval_seconds=10).interval_seconds == 10


def test_interval_above_maximum_is_rejected_with_the_maximum() -> None:
    year = 366 * 86400
    assert trigger_validate(kind="interval", timezone="UTC", interval_seconds=year).interval_seconds == year
    assert errors_of(kind="interval", interval_seconds=year + 1) == {
        "interval_seconds": f"{year + 1} s is above the maximum of {year} s"
    }


def test_interval_limits_are_settings(settings: Settings) -> None:
    settings.ECHOFLOW = {**settings.ECHOFLOW, "MIN_INTERVAL_SECONDS": 60, "MAX_INTERVAL_SECONDS": 3600}
    assert errors_of(kind="interval", interval_seconds=59) == {"interval_seconds": "59 s is below the minimum of 60 s"}
    assert errors_of(kind="interval", interval_seconds=3601) == {
        "interval_seconds": "3601 s is above the maximum of 3600 s"
    }


def test_cron_with_seconds_below_minimum_interval_is_rejected() -> None:
    errors = errors_of(kind="cron", cron="*/5 * * * * *")
    assert errors == {"cron": "fires every 5 s, below the minimum interval of 10 s (ECHOFLOW_MIN_INTERVAL_SECONDS)"}
    assert trigger_validate(kind="cron", timezone="UTC", cron="*/10 * * * * *").cron == "*/10 * * * * *"


def test_cron_with_seconds_uses_the_minimum_interval_setting(settings: Settings) -> None:
    settings.ECHOFLOW = {**settings.ECHOFLOW, "MIN_INTERVAL_SECONDS": 60}
    assert (
        "fires every 30 s, below the minimum interval of 60 s" in errors_of(kind="cron", cron="0,30 * * * * *")["cron"]
    )
    assert trigger_validate(kind="cron", timezone="UTC", cron="0 * * * * *").cron == "0 * * * * *"


def test_interval_requires_seconds_and_once_requires_an_instant() -> None:
    assert errors_of(kind="interval") == {"interval_seconds": "is required for an interval trigger"}
    assert errors_of(kind="once") == {"run_at": "is required for a once trigger (or give a delay in seconds)"}


def test_naive_datetimes_are_rejected() -> None:
    naive = datetime(2026, 10, 1, 8, 0)
    errors = errors_of(kind="once", run_at=naive, start_at=naive, end_at=naive + timedelta(days=1))
    assert set(errors) == {"run_at", "start_at", "end_at"}
    assert errors["run_at"].startswith("needs a UTC offset or time zone")


def test_end_before_start_and_max_runs_below_one_are_rejected() -> None:
    errors = errors_of(kind="interval", interval_seconds=60, start_at=T0, end_at=T0, max_runs=0)
    assert errors == {"end_at": "must be after start_at", "max_runs": "must be at least 1; got 0"}


def test_validated_instants_are_stored_in_utc() -> None:
    local = datetime(2026, 10, 1, 8, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    trigger = trigger_validate(kind="once", timezone="Europe/Berlin", run_at=local, start_at=local)
    assert trigger.run_at == datetime(2026, 10, 1, 6, 0, tzinfo=UTC)
    assert trigger.run_at is not None and trigger.run_at.tzinfo is UTC
    assert trigger.start_at is not None and trigger.start_at.tzinfo is UTC


# -- interval -----------------------------------------------------------------------------------------------------


def test_interval_slots_are_anchor_plus_multiples_without_drift_over_days() -> None:
    trigger = Trigger(kind=TriggerKind.INTERVAL, interval_seconds=7, start_at=T0)
    slots = list(islice(trigger.iter_after(T0 - timedelta(seconds=1)), 10 * 86400 // 7))
    assert slots[0] == T0
    assert {b - a for a, b in pairwise(slots)} == {timedelta(seconds=7)}
    assert slots[-1] == T0 + timedelta(seconds=7 * (len(slots) - 1))


def test_interval_slot_ignores_how_late_earlier_runs_were() -> None:
    trigger = Trigger(kind=TriggerKind.INTERVAL, interval_seconds=600, start_at=T0)
    # Asked long after a slot (a late run finishing at 10:07:31.25), the next slot is still on the grid.
    assert trigger.next_after(datetime(2026, 1, 1, 10, 7, 31, 250000, tzinfo=UTC)) == datetime(
        2026, 1, 1, 10, 10, tzinfo=UTC
    )
    assert trigger.next_after(datetime(2026, 1, 1, 10, 10, tzinfo=UTC)) == datetime(2026, 1, 1, 10, 20, tzinfo=UTC)


def test_interval_is_real_elapsed_time_across_dst() -> None:
    start = datetime(2026, 3, 8, 5, 0, tzinfo=UTC)  # midnight EST in New York
    trigger = Trigger(kind=TriggerKind.INTERVAL, timezone="America/New_York", interval_seconds=3600, start_at=start)
    slots = trigger.preview(after=start, count=4)
    assert [s.astimezone(ZoneInfo("America/New_York")).strftime("%H:%M%z") for s in slots] == [
        "01:00-0500",
        "03:00-0400",
        "04:00-0400",
        "05:00-0400",
    ]


def test_interval_first_slot_is_start_at_and_none_after_end_at() -> None:
    start, end = T0 + timedelta(days=1), T0 + timedelta(days=1, minutes=30)
    trigger = Trigger(kind=TriggerKind.INTERVAL, interval_seconds=600, start_at=start, end_at=end)
    assert trigger.preview(after=T0, count=10) == [start + timedelta(minutes=m) for m in (0, 10, 20, 30)]
    assert trigger.next_after(end) is None


def test_interval_without_start_is_anchored_at_the_schedule_creation() -> None:
    created = datetime(2026, 1, 1, 9, 0, 5, tzinfo=UTC)
    trigger = Trigger(kind=TriggerKind.INTERVAL, interval_seconds=60, anchor=created)
    assert trigger.next_after(datetime(2026, 1, 1, 12, 0, tzinfo=UTC)) == datetime(2026, 1, 1, 12, 0, 5, tzinfo=UTC)


def test_interval_first_slot_does_not_depend_on_the_microseconds_of_creation(org: Organization) -> None:
    firsts = []
    for name, now in (("whole", T0), ("fraction", T0 + timedelta(microseconds=400_000))):
        data = {"name": name, "trigger_kind": "interval", "interval_seconds": 60, "action_name": "echoflow.echo"}
        with time_machine.travel(now, tick=False):
            schedule = schedule_create(organization=org, data=data, now=now)
        assert schedule.next_run_at is not None
        firsts.append(schedule.next_run_at)
    assert firsts[0] == firsts[1]


# -- once and bounds ----------------------------------------------------------------------------------------------


def test_once_fires_at_its_instant_and_never_again() -> None:
    at = datetime(2026, 10, 1, 6, 0, tzinfo=UTC)
    trigger = Trigger(kind=TriggerKind.ONCE, run_at=at)
    assert trigger.preview(after=T0, count=5) == [at]
    assert trigger.next_after(at) is None


def test_cron_bounds_start_at_and_end_at_are_inclusive() -> None:
    trigger = Trigger(
        kind=TriggerKind.CRON,
        cron="0 * * * *",
        start_at=datetime(2026, 1, 1, 10, 0, tzinfo=UTC),
        end_at=datetime(2026, 1, 1, 13, 0, tzinfo=UTC),
    )
    assert [s.hour for s in trigger.preview(after=T0, count=10)] == [10, 11, 12, 13]


def test_once_in_the_past_is_rejected_unless_asked_to_run_now(org: Organization) -> None:
    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    past = "2026-05-01T11:00:00+00:00"
    data = {"name": "late", "trigger_kind": "once", "run_at": past, "action_name": "echoflow.echo"}
    with time_machine.travel(now, tick=False):
        with pytest.raises(ValidationError) as caught:
            schedule_create(organization=org, data=data, now=now)
        assert caught.value.message_dict["run_at"][0] == (
            "2026-05-01T11:00:00+00:00 is in the past; pass run_now_if_past to run it now"
        )
        schedule = schedule_create(organization=org, data={**data, "run_now_if_past": True}, now=now)
    assert schedule.state == ScheduleState.ACTIVE
    # Planned at the moment it was asked for, so no catch-up window can count it as missed.
    assert schedule.next_run_at == now


def test_once_given_as_a_delay_resolves_to_an_instant(org: Organization) -> None:
    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    data = {"name": "soon", "delay_seconds": 90, "action_name": "echoflow.echo"}
    with time_machine.travel(now, tick=False):
        schedule = schedule_create(organization=org, data=data, now=now)
    assert schedule.trigger_kind == TriggerKind.ONCE
    assert schedule.run_at == schedule.next_run_at == now + timedelta(seconds=90)


# -- jitter -------------------------------------------------------------------------------------------------------


def test_jitter_is_deterministic_per_schedule_and_slot() -> None:
    slot = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
    first = jitter_offset(schedule_id=7, slot=slot, jitter_seconds=300, period=None)
    assert jitter_offset(schedule_id=7, slot=slot, jitter_seconds=300, period=None) == first
    same_instant = slot.astimezone(ZoneInfo("Asia/Shanghai"))
    assert jitter_offset(schedule_id=7, slot=same_instant, jitter_seconds=300, period=None) == first
    others = {
        jitter_offset(schedule_id=8, slot=slot, jitter_seconds=300, period=None),
        jitter_offset(schedule_id=7, slot=slot + timedelta(days=1), jitter_seconds=300, period=None),
    }
    assert first not in others


def test_jitter_stays_within_zero_and_jitter() -> None:
    offsets = [
        jitter_offset(schedule_id=1, slot=T0 + timedelta(hours=h), jitter_seconds=120, period=None) for h in range(500)
    ]
    assert all(timedelta(0) <= o <= timedelta(seconds=120) for o in offsets)
    # Spread over the range, not stuck at one end.
    assert min(offsets) < timedelta(seconds=10) and max(offsets) > timedelta(seconds=110)


def test_jitter_never_reaches_the_next_slot() -> None:
    period = timedelta(seconds=60)
    offsets = [
        jitter_offset(schedule_id=3, slot=T0 + timedelta(minutes=m), jitter_seconds=3600, period=period)
        for m in range(500)
    ]
    assert all(timedelta(0) <= o < period for o in offsets)


def test_no_jitter_means_no_delay() -> None:
    assert jitter_offset(schedule_id=1, slot=T0, jitter_seconds=0, period=None) == timedelta(0)


# -- preview ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "trigger",
    [
        Trigger(kind=TriggerKind.CRON, timezone="Europe/London", cron="30 1 * * *"),
        Trigger(kind=TriggerKind.INTERVAL, interval_seconds=3600, start_at=T0),
    ],
)
def test_preview_is_the_dispatchers_chain_of_next_slots(trigger: Trigger) -> None:
    after = datetime(2026, 3, 27, tzinfo=UTC)
    preview = trigger.preview(after=after, count=5)
    chain = [trigger.next_after(after)]
    for _ in range(4):
        assert chain[-1] is not None
        chain.append(trigger.next_after(chain[-1]))
    assert preview == chain
    assert len(preview) == 5


def test_describe_says_what_the_trigger_does() -> None:
    assert Trigger(kind=TriggerKind.INTERVAL, interval_seconds=1800).describe() == "every 30 minutes"
    assert Trigger(kind=TriggerKind.CRON, cron="0 8 * * 1-5", timezone="Asia/Shanghai").describe() == (
        "cron 0 8 * * 1-5 (Asia/Shanghai)"
    )
