"""Backfill (runs/backfill.py and ``manage.py backfill``): a run for every slot in [from, to), never twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from pytest_django.fixtures import Settings

from echoflow.accounts.models import Organization
from echoflow.audit.models import AuditEntry
from echoflow.events.models import OutboxEvent
from runs.backfill import schedule_backfill
from runs.dispatcher import dispatch_tick
from runs.models import Run, RunStatus, RunTrigger
from runs.run_writes import scheduled_run_key
from schedules.models import Schedule
from schedules.services import schedule_create

NOW = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
JUNE_1 = datetime(2026, 6, 1, tzinfo=UTC)


def create(org: Organization, *, created: datetime = JUNE_1 - timedelta(days=30), **data: Any) -> Schedule:
    values: dict[str, Any] = {
        "name": "hourly",
        "trigger_kind": "cron",
        "cron": "0 * * * *",
        "timezone": "UTC",
        "action_name": "echoflow.echo",
    }
    values.update(data)
    with time_machine.travel(created, tick=False):
        return schedule_create(organization=org, data=values, now=created)


def run_slots(schedule: Schedule) -> list[datetime]:
    return sorted(s for s in Run.objects.filter(schedule=schedule).values_list("slot", flat=True) if s is not None)


def test_backfill_creates_a_run_for_every_slot_in_the_half_open_range(org: Organization) -> None:
    schedule = create(org)
    result = schedule_backfill(schedule=schedule, start=JUNE_1, end=JUNE_1 + timedelta(hours=6), now=NOW)
    expected = [JUNE_1 + timedelta(hours=h) for h in range(6)]  # 00:00 … 05:00; 06:00 is `to`, excluded
    assert run_slots(schedule) == expected
    assert (result.slots, result.created, result.existing) == (6, 6, 0)
    assert (result.first_slot, result.last_slot) == (expected[0], expected[-1])
    runs = Run.objects.filter(schedule=schedule)
    assert {r.trigger for r in runs} == {RunTrigger.BACKFILL}
    assert {r.status for r in runs} == {RunStatus.QUEUED}
    assert all(r.due_at == r.slot for r in runs)
    assert {r.idempotency_key for r in runs} == {scheduled_run_key(schedule.pk, s) for s in expected}


def test_backfill_writes_one_queued_event_per_new_run(org: Organization) -> None:
    schedule = create(org)
    result = schedule_backfill(schedule=schedule, start=JUNE_1, end=JUNE_1 + timedelta(hours=3), now=NOW)
    events = OutboxEvent.objects.filter(type="run.queued", schedule_id=schedule.pk)
    assert sorted(e.run_id or 0 for e in events) == sorted(result.run_ids)
    assert {e.data["trigger"] for e in events} == {"backfill"}


def test_backfill_is_audited_with_its_range_and_counts(org: Organization) -> None:
    schedule = create(org)
    schedule_backfill(schedule=schedule, start=JUNE_1, end=JUNE_1 + timedelta(hours=2), now=NOW)
    entry = AuditEntry.objects.get(action="schedule.backfill")
    assert entry.target_id == str(schedule.pk)
    assert entry.changes == {
        "from": "2026-06-01T00:00:00+00:00",
        "to": "2026-06-01T02:00:00+00:00",
        "slots": 2,
        "created": 2,
    }


def test_backfill_twice_creates_nothing_the_second_time(org: Organization) -> None:
    schedule = create(org)
    schedule_backfill(schedule=schedule, start=JUNE_1, end=JUNE_1 + timedelta(hours=4), now=NOW)
    again = schedule_backfill(schedule=schedule, start=JUNE_1, end=JUNE_1 + timedelta(hours=6), now=NOW)
    assert (again.slots, again.created, again.existing) == (6, 2, 4)
    assert len(run_slots(schedule)) == 6
    assert OutboxEvent.objects.filter(type="run.queued", schedule_id=schedule.pk).count() == 6


def test_backfill_never_duplicates_a_slot_the_dispatcher_ran(org: Organization) -> None:
    schedule = create(org, created=NOW - timedelta(hours=3, minutes=30))
    for hour in (3, 2, 1):
        moment = NOW - timedelta(hours=hour) + timedelta(seconds=1)
        with time_machine.travel(moment, tick=False):
            dispatch_tick(now=moment, sender=lambda rows: None)
    scheduled = run_slots(schedule)
    assert len(scheduled) == 3
    result = schedule_backfill(schedule=schedule, start=NOW - timedelta(hours=6), end=NOW, now=NOW)
    assert (result.slots, result.created, result.existing) == (6, 3, 3)
    assert run_slots(schedule) == [NOW - timedelta(hours=h) for h in range(6, 0, -1)]
    assert Run.objects.filter(schedule=schedule, trigger=RunTrigger.SCHEDULE).count() == 3


def test_backfill_follows_the_trigger_across_dst(org: Organization) -> None:
    # 02:30 New York does not exist on 8 March: that day's slot is 03:00 EDT, as the dispatcher would fire it.
    schedule = create(org, cron="30 2 * * *", timezone="America/New_York")
    start, end = datetime(2026, 3, 7, tzinfo=UTC), datetime(2026, 3, 10, tzinfo=UTC)
    schedule_backfill(schedule=schedule, start=start, end=end, now=NOW)
    assert run_slots(schedule) == [
        datetime(2026, 3, 7, 7, 30, tzinfo=UTC),
        datetime(2026, 3, 8, 7, 0, tzinfo=UTC),
        datetime(2026, 3, 9, 6, 30, tzinfo=UTC),
    ]


def test_backfill_respects_the_schedule_bounds(org: Organization) -> None:
    schedule = create(org, start_at="2026-06-01T02:00:00+00:00", end_at="2026-06-01T04:00:00+00:00")
    result = schedule_backfill(schedule=schedule, start=JUNE_1, end=JUNE_1 + timedelta(days=1), now=NOW)
    assert run_slots(schedule) == [JUNE_1 + timedelta(hours=h) for h in (2, 3, 4)]
    assert result.created == 3


def test_backfill_of_an_interval_uses_its_anchor(org: Organization) -> None:
    schedule = create(org, trigger_kind="interval", interval_seconds=3600, start_at="2026-05-01T00:15:00+00:00")
    schedule_backfill(schedule=schedule, start=JUNE_1, end=JUNE_1 + timedelta(hours=3), now=NOW)
    assert run_slots(schedule) == [JUNE_1 + timedelta(hours=h, minutes=15) for h in range(3)]


def test_backfill_does_not_consume_max_runs_or_move_next_run(org: Organization) -> None:
    schedule = create(org, max_runs=2, created=NOW - timedelta(minutes=10))
    before = schedule.next_run_at
    schedule_backfill(schedule=schedule, start=JUNE_1, end=JUNE_1 + timedelta(hours=5), now=NOW)
    schedule.refresh_from_db()
    assert schedule.runs_count == 0
    assert schedule.next_run_at == before


def test_backfill_dry_run_counts_and_writes_nothing(org: Organization) -> None:
    schedule = create(org)
    schedule_backfill(schedule=schedule, start=JUNE_1, end=JUNE_1 + timedelta(hours=2), now=NOW)
    result = schedule_backfill(schedule=schedule, start=JUNE_1, end=JUNE_1 + timedelta(hours=5), now=NOW, dry_run=True)
    assert (result.slots, result.created, result.existing, result.dry_run) == (5, 0, 2, True)
    assert len(run_slots(schedule)) == 2


def test_backfill_beyond_the_cap_is_refused_and_writes_nothing(org: Organization, settings: Settings) -> None:
    settings.ECHOFLOW = {**settings.ECHOFLOW, "BACKFILL_CAP": 24}
    schedule = create(org)
    with pytest.raises(ValidationError) as caught:
        schedule_backfill(schedule=schedule, start=JUNE_1, end=JUNE_1 + timedelta(hours=25), now=NOW)
    message = caught.value.message_dict["to"][0]
    assert message.startswith("[from, to) holds more than 24 slots of this schedule (the backfill cap")
    assert "2026-06-01T23:00:00+00:00" in message  # where the first 24 end
    assert Run.objects.count() == 0
    assert OutboxEvent.objects.filter(type="run.queued").count() == 0
    assert not AuditEntry.objects.filter(action="schedule.backfill").exists()
    # Exactly at the cap is fine.
    assert schedule_backfill(schedule=schedule, start=JUNE_1, end=JUNE_1 + timedelta(hours=24), now=NOW).created == 24


def test_backfill_default_cap_is_ten_thousand(org: Organization, settings: Settings) -> None:
    assert settings.ECHOFLOW["BACKFILL_CAP"] == 10_000
    schedule = create(org, cron="* * * * *")
    with pytest.raises(ValidationError) as caught:
        schedule_backfill(schedule=schedule, start=JUNE_1, end=JUNE_1 + timedelta(minutes=10_001), now=NOW)
    assert "more than 10000 slots" in caught.value.message_dict["to"][0]
    assert Run.objects.count() == 0


@pytest.mark.parametrize(
    ("start", "end", "field", "message"),
    [
        (JUNE_1, JUNE_1, "to", "2026-06-01T00:00:00+00:00 must be after from (2026-06-01T00:00:00+00:00)"),
        (JUNE_1 + timedelta(hours=1), JUNE_1, "to", "2026-06-01T00:00:00+00:00 must be after from"),
        (JUNE_1, NOW + timedelta(hours=1), "to", "2026-06-10T13:00:00+00:00 is in the future"),
        (datetime(2026, 6, 1), JUNE_1 + timedelta(hours=1), "from", "needs a UTC offset or time zone"),
        (JUNE_1, datetime(2026, 6, 2), "to", "needs a UTC offset or time zone"),
    ],
)
def test_backfill_bad_range_names_from_or_to_and_writes_nothing(
    org: Organization, start: datetime, end: datetime, field: str, message: str
) -> None:
    schedule = create(org)
    with pytest.raises(ValidationError) as caught:
        schedule_backfill(schedule=schedule, start=start, end=end, now=NOW)
    assert caught.value.message_dict[field][0].startswith(message)
    assert Run.objects.count() == 0


# -- the command ------------------------------------------------------------------------------------------------


def backfill(*args: str) -> str:
    out = StringIO()
    with time_machine.travel(NOW, tick=False):
        call_command("backfill", *args, stdout=out)
    return out.getvalue()


def test_backfill_command_creates_runs_by_name(org: Organization) -> None:
    schedule = create(org)
    output = backfill("hourly", "--from", "2026-06-01T00:00:00Z", "--to", "2026-06-01T03:00:00Z", "--org", "acme")
    assert AuditEntry.objects.get(action="schedule.backfill").actor_label == "command:backfill"
    assert output.strip() == (
        "hourly: 3 slot(s) from 2026-06-01T00:00:00+00:00 to 2026-06-01T02:00:00+00:00; "
        "created 3 backfill run(s), 0 already had a run"
    )
    assert len(run_slots(schedule)) == 3


def test_backfill_command_dry_run_by_id_writes_nothing(org: Organization) -> None:
    schedule = create(org, timezone="Asia/Shanghai")
    output = backfill(
        str(schedule.pk), "--from", "2026-06-01T08:00:00+08:00", "--to", "2026-06-01T10:00:00+08:00", "--dry-run"
    )
    assert output.strip() == (
        "dry run: hourly: 2 slot(s) from 2026-06-01T08:00:00+08:00 to 2026-06-01T09:00:00+08:00; "
        "2 would be created, 0 already have a run"
    )
    assert Run.objects.count() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["hourly", "--from", "yesterday", "--to", "2026-06-01T03:00:00Z"], "from: 'yesterday' is not an ISO-8601"),
        (
            ["hourly", "--from", "2026-06-01T00:00:00", "--to", "2026-06-01T03:00:00Z"],
            "from: '2026-06-01T00:00:00' needs",
        ),
        (
            ["hourly", "--from", "2026-06-02T00:00:00Z", "--to", "2026-06-01T03:00:00Z"],
            "to: 2026-06-01T03:00:00+00:00 must",
        ),
        (["nightly", "--from", "2026-06-01T00:00:00Z", "--to", "2026-06-01T03:00:00Z"], "schedule: no schedule named"),
        (
            ["hourly", "--from", "2026-06-01T00:00:00Z", "--to", "2026-06-01T03:00:00Z", "--org", "nope"],
            "org: no organ",
        ),
    ],
)
def test_backfill_command_errors_are_one_line_with_exit_status_2(
    org: Organization, args: list[str], message: str
) -> None:
    create(org)
    with pytest.raises(CommandError) as caught:
        backfill(*args)
    assert caught.value.returncode == 2
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)
    assert Run.objects.count() == 0


def test_backfill_command_beyond_the_cap_exits_2(org: Organization, settings: Settings) -> None:
    settings.ECHOFLOW = {**settings.ECHOFLOW, "BACKFILL_CAP": 2}
    create(org)
    with pytest.raises(CommandError) as caught:
        backfill("hourly", "--from", "2026-06-01T00:00:00Z", "--to", "2026-06-01T03:00:00Z")
    assert caught.value.returncode == 2
    assert str(caught.value).startswith("to: [from, to) holds more than 2 slots")
