"""Management commands: schedules, run_now, pause, resume, preview, check_scheduler.

Expected fire instants were worked out by hand from the tz database and the DST rules in schedules/cron.py:
* Europe/Riga 2026: clocks go 03:00 EET -> 04:00 EEST on 29 March and 04:00 EEST -> 03:00 EET on 25 October.
* America/New_York 2026: 02:00 EST -> 03:00 EDT on 8 March, 02:00 EDT -> 01:00 EST on 1 November.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError

from echoflow.accounts.models import Organization
from runs.models import DispatcherHeartbeat, Run, RunStatus, RunTrigger
from schedules.models import Schedule, ScheduleState
from schedules.services import schedule_cancel, schedule_create, schedule_pause

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 3, 27, 12, 0, tzinfo=UTC)


def run(name: str, *args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(name, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def lines(name: str, *args: str) -> list[str]:
    return run(name, *args)[0].splitlines()


def failure(name: str, *args: str) -> CommandError:
    with pytest.raises(CommandError) as info:
        run(name, *args)
    return info.value


def make_schedule(organization: Organization, name: str, **fields: Any) -> Schedule:
    data: dict[str, Any] = {
        "name": name,
        "trigger_kind": "cron",
        "cron": "30 2 * * *",
        "timezone": "Europe/Riga",
        "action_name": "echoflow.noop",
        **fields,
    }
    return schedule_create(organization=organization, data=data, now=NOW)


# -- preview: cron across daylight-saving changes -------------------------------------------------------------


def test_preview_cron_in_riga_keeps_wall_clock_across_spring_forward() -> None:
    assert lines(
        "preview",
        "--cron",
        "30 2 * * *",
        "--tz",
        "Europe/Riga",
        "--after",
        "2026-03-28T00:00:00+00:00",
        "--count",
        "5",
    ) == [
        "2026-03-28T02:30:00+02:00",
        "2026-03-29T02:30:00+02:00",  # 02:30 still exists: the gap is 03:00-04:00
        "2026-03-30T02:30:00+03:00",
        "2026-03-31T02:30:00+03:00",
        "2026-04-01T02:30:00+03:00",
    ]


def test_preview_cron_in_riga_dst_gap_fires_at_end_of_gap() -> None:
    assert lines(
        "preview",
        "--cron",
        "30 3 * * *",
        "--tz",
        "Europe/Riga",
        "--after",
        "2026-03-28T00:00:00+00:00",
        "--count",
        "3",
    ) == ["2026-03-28T03:30:00+02:00", "2026-03-29T04:00:00+03:00", "2026-03-30T03:30:00+03:00"]


def test_preview_cron_in_riga_repeated_hour_fires_once() -> None:
    assert lines(
        "preview",
        "--cron",
        "30 3 * * *",
        "--tz",
        "Europe/Riga",
        "--after",
        "2026-10-24T00:00:00+00:00",
        "--count",
        "3",
    ) == ["2026-10-24T03:30:00+03:00", "2026-10-25T03:30:00+03:00", "2026-10-26T03:30:00+02:00"]


def test_preview_cron_in_new_york_dst_gap_fires_at_0300_edt() -> None:
    assert lines(
        "preview",
        "--cron",
        "30 2 * * *",
        "--tz",
        "America/New_York",
        "--after",
        "2026-03-07T00:00:00-05:00",
        "--count",
        "3",
    ) == ["2026-03-07T02:30:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]


def test_preview_cron_in_new_york_repeated_hour_fires_once() -> None:
    assert lines(
        "preview",
        "--cron",
        "30 1 * * *",
        "--tz",
        "America/New_York",
        "--after",
        "2026-10-31T00:00:00-04:00",
        "--count",
        "3",
    ) == ["2026-10-31T01:30:00-04:00", "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]


def test_preview_elapsed_cron_fires_in_both_copies_of_repeated_hour() -> None:
    assert lines(
        "preview",
        "--cron",
        "*/30 * * * *",
        "--tz",
        "America/New_York",
        "--after",
        "2026-11-01T00:45:00-04:00",
        "--count",
        "5",
    ) == [
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:30:00-04:00",
        "2026-11-01T01:00:00-05:00",
        "2026-11-01T01:30:00-05:00",
        "2026-11-01T02:00:00-05:00",
    ]


def test_preview_elapsed_cron_has_no_slots_inside_dst_gap() -> None:
    assert lines(
        "preview",
        "--cron",
        "*/30 * * * *",
        "--tz",
        "America/New_York",
        "--after",
        "2026-03-08T01:00:00-05:00",
        "--count",
        "3",
    ) == ["2026-03-08T01:30:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-08T03:30:00-04:00"]


def test_preview_cron_macro_in_utc_by_default() -> None:
    assert lines("preview", "--cron", "@daily", "--after", "2026-01-01T00:00:00Z", "--count", "2") == [
        "2026-01-02T00:00:00+00:00",
        "2026-01-03T00:00:00+00:00",
    ]


def test_preview_after_is_exclusive() -> None:
    assert lines(
        "preview",
        "--cron",
        "30 2 * * *",
        "--tz",
        "Europe/Riga",
        "--after",
        "2026-03-28T02:30:00+02:00",
        "--count",
        "1",
    ) == ["2026-03-29T02:30:00+02:00"]


def test_preview_after_defaults_to_now() -> None:
    with time_machine.travel(datetime(2026, 3, 8, 6, 59, tzinfo=UTC), tick=False):  # 01:59 EST
        assert lines("preview", "--cron", "30 2 * * *", "--tz", "America/New_York", "--count", "1") == [
            "2026-03-08T03:00:00-04:00"
        ]


def test_preview_json_prints_the_same_strings() -> None:
    out, _ = run(
        "preview",
        "--cron",
        "30 1 * * *",
        "--tz",
        "America/New_York",
        "--after",
        "2026-10-31T00:00:00-04:00",
        "--count",
        "3",
        "--json",
    )
    assert json.loads(out) == ["2026-10-31T01:30:00-04:00", "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]


def test_preview_count_is_bounded_to_1000() -> None:
    slots = lines("preview", "--cron", "0 * * * *", "--after", "2026-01-01T00:00:00Z", "--count", "1000")
    assert len(slots) == 1000
    assert slots[-1] == "2026-02-11T16:00:00+00:00"  # 1000 hours after midnight on 1 January


# -- preview: interval and once -------------------------------------------------------------------------------


def test_preview_interval_counts_real_seconds_across_spring_forward() -> None:
    assert lines(
        "preview",
        "--interval",
        "3600",
        "--start",
        "2026-03-29T00:00:00+02:00",
        "--tz",
        "Europe/Riga",
        "--after",
        "2026-03-28T23:30:00+02:00",
        "--count",
        "5",
    ) == [
        "2026-03-29T00:00:00+02:00",  # the anchor itself is a slot
        "2026-03-29T01:00:00+02:00",
        "2026-03-29T02:00:00+02:00",
        "2026-03-29T04:00:00+03:00",  # one hour after 02:00 EET; 03:00 local does not exist
        "2026-03-29T05:00:00+03:00",
    ]


def test_preview_interval_anchored_at_start_not_at_after() -> None:
    assert lines(
        "preview",
        "--interval",
        "900",
        "--start",
        "2026-10-01T08:00:00+02:00",
        "--tz",
        "Europe/Berlin",
        "--after",
        "2026-10-01T08:20:00+02:00",
        "--count",
        "2",
    ) == ["2026-10-01T08:30:00+02:00", "2026-10-01T08:45:00+02:00"]


def test_preview_interval_without_start_counts_from_after() -> None:
    assert lines("preview", "--interval", "60", "--after", "2026-10-01T08:00:00.250+00:00", "--count", "2") == [
        "2026-10-01T08:01:00+00:00",
        "2026-10-01T08:02:00+00:00",
    ]


def test_preview_end_stops_the_list() -> None:
    assert lines(
        "preview",
        "--interval",
        "600",
        "--start",
        "2026-10-01T08:00:00Z",
        "--end",
        "2026-10-01T08:20:00Z",
        "--after",
        "2026-10-01T07:00:00Z",
        "--count",
        "10",
    ) == ["2026-10-01T08:00:00+00:00", "2026-10-01T08:10:00+00:00", "2026-10-01T08:20:00+00:00"]


def test_preview_once_prints_the_instant_in_its_zone() -> None:
    assert lines(
        "preview", "--at", "2026-10-01T08:00:00+02:00", "--tz", "Asia/Shanghai", "--after", "2026-01-01T00:00:00Z"
    ) == ["2026-10-01T14:00:00+08:00"]


def test_preview_once_in_the_past_prints_nothing_and_says_so() -> None:
    out, err = run("preview", "--at", "2026-10-01T08:00:00Z", "--after", "2026-11-01T00:00:00Z")
    assert out == ""
    assert err.strip() == "no fire instant after 2026-11-01T00:00:00+00:00"
    out, _ = run("preview", "--at", "2026-10-01T08:00:00Z", "--after", "2026-11-01T00:00:00Z", "--json")
    assert json.loads(out) == []


# -- preview: saved schedules ---------------------------------------------------------------------------------


def test_preview_saved_schedule_by_name_uses_its_zone(org: Organization) -> None:
    make_schedule(org, "nightly", cron="30 1 * * *", timezone="America/New_York")
    assert lines(
        "preview", "--schedule", "nightly", "--org", "acme", "--after", "2026-10-31T12:00:00Z", "--count", "2"
    ) == ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]


def test_preview_saved_schedule_by_id(org: Organization) -> None:
    schedule = make_schedule(
        org,
        "every-15-min",
        trigger_kind="interval",
        cron="",
        interval_seconds=900,
        start_at="2026-03-27T12:00:00+00:00",
        timezone="Europe/Riga",
    )
    assert lines("preview", "--schedule", str(schedule.pk), "--after", "2026-03-27T12:10:00Z", "--count", "2") == [
        "2026-03-27T14:15:00+02:00",
        "2026-03-27T14:30:00+02:00",
    ]


# -- preview: invalid input is one line naming the field, exit 2 ----------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cron", "61 2 * * *"], "cron: minute: 61 is outside 0-59"),
        (["--cron", "0 0 30 2 *"], "cron: day-of-month: no chosen month has that many days"),
        (["--interval", "3"], "interval_seconds: 3 s is below the minimum of 10 s"),
        (["--interval", "ten"], "interval_seconds: 'ten' is not a whole number of seconds"),
        (
            ["--cron", "30 2 * * *", "--after", "tomorrow"],
            "after: 'tomorrow' is not an ISO-8601 date-time (e.g. 2026-10-01T08:00:00+02:00)",
        ),
        (
            ["--cron", "30 2 * * *", "--after", "2026-03-28T00:00:00"],
            "after: '2026-03-28T00:00:00' needs a UTC offset or time zone (e.g. 2026-10-01T08:00:00+02:00)",
        ),
        (
            ["--at", "2026-13-01T00:00:00Z"],
            "run_at: '2026-13-01T00:00:00Z' is not an ISO-8601 date-time (e.g. 2026-10-01T08:00:00+02:00)",
        ),
        (
            ["--interval", "60", "--start", "2026-10-02T00:00:00Z", "--end", "2026-10-01T00:00:00Z"],
            "end_at: must be after start_at",
        ),
        (["--cron", "30 2 * * *", "--count", "0"], "count: '0' is not a whole number between 1 and 1000"),
        (["--cron", "30 2 * * *", "--count", "1001"], "count: '1001' is not a whole number between 1 and 1000"),
        (["--cron", "30 2 * * *", "--count", "many"], "count: 'many' is not a whole number between 1 and 1000"),
        ([], "trigger: give exactly one of --cron, --interval, --at or --schedule (got none)"),
        (
            ["--cron", "30 2 * * *", "--interval", "60"],
            "trigger: give exactly one of --cron, --interval, --at or --schedule (got --cron, --interval)",
        ),
    ],
)
def test_preview_invalid_input_names_the_field(args: list[str], message: str) -> None:
    error = failure("preview", *args)
    assert str(error) == message
    assert error.returncode == 2


def test_preview_unknown_zone_suggests_the_closest_name() -> None:
    error = failure("preview", "--cron", "30 2 * * *", "--tz", "Europe/Rga")
    assert error.returncode == 2
    # The full list of suggestions is the zone lookup's business; the nearest one must come first.
    assert str(error).startswith("timezone: 'Europe/Rga' is not a known IANA time zone; did you mean Europe/Riga")
    assert "\n" not in str(error)


@pytest.mark.django_db
def test_preview_unknown_schedule_is_a_usage_error() -> None:
    error = failure("preview", "--schedule", "nope")
    assert (str(error), error.returncode) == ("schedule: no schedule named 'nope'", 2)
    error = failure("preview", "--schedule", "4242")
    assert (str(error), error.returncode) == ("schedule: no schedule with id 4242", 2)
    error = failure("preview", "--schedule", "nope", "--org", "nowhere")
    assert (str(error), error.returncode) == ("org: no organization with the slug 'nowhere'", 2)


def test_preview_saved_schedule_refuses_its_own_trigger_options(org: Organization) -> None:
    make_schedule(org, "nightly")
    error = failure("preview", "--schedule", "nightly", "--tz", "UTC")
    assert (str(error), error.returncode) == ("tz: --tz cannot be combined with --schedule (it has one)", 2)


def _manage(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBUG": "1"}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_preview_from_the_shell_prints_instants_and_exits_0() -> None:
    done = _manage(
        "preview",
        "--cron",
        "30 2 * * *",
        "--tz",
        "Europe/Riga",
        "--after",
        "2026-03-28T00:00:00+00:00",
        "--count",
        "3",
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines() == [
        "2026-03-28T02:30:00+02:00",
        "2026-03-29T02:30:00+02:00",
        "2026-03-30T02:30:00+03:00",
    ]


def test_preview_from_the_shell_reports_bad_input_on_one_line_and_exits_2() -> None:
    done = _manage("preview", "--cron", "61 2 * * *")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == ["CommandError: cron: minute: 61 is outside 0-59"]


# -- schedules ------------------------------------------------------------------------------------------------


def test_schedules_prints_a_table_with_next_run_in_each_zone(org: Organization, other_org: Organization) -> None:
    make_schedule(org, "nightly")
    make_schedule(org, "poll", trigger_kind="interval", cron="", interval_seconds=900, timezone="UTC")
    make_schedule(other_org, "report", cron="0 8 * * 1-5", timezone="Asia/Shanghai")
    Schedule.objects.filter(name="poll").update(last_run_status=RunStatus.FAILED)
    ids = dict(Schedule.objects.values_list("name", "pk"))
    table = lines("schedules")
    assert [re.split(r"\s{2,}", line) for line in table] == [
        ["id", "org", "name", "trigger", "state", "next run", "last status"],
        # Acme before Globex, names in order within an organization.
        [
            str(ids["nightly"]),
            "acme",
            "nightly",
            "cron 30 2 * * * (Europe/Riga)",
            "active",
            "2026-03-28T02:30:00+02:00",
            "-",
        ],
        [str(ids["poll"]), "acme", "poll", "every 15 minutes", "active", "2026-03-27T12:15:00+00:00", "failed"],
        [
            str(ids["report"]),
            "globex",
            "report",
            "cron 0 8 * * 1-5 (Asia/Shanghai)",
            "active",
            "2026-03-30T08:00:00+08:00",
            "-",
        ],
    ]
    # Columns line up: every value starts where its header does.
    header = table[0]
    for line in table[1:]:
        assert line[header.index("next run") :].startswith("2026-")


def test_schedules_filters_by_org_and_state(org: Organization, other_org: Organization) -> None:
    make_schedule(org, "nightly")
    paused = make_schedule(org, "hourly", cron="0 * * * *")
    make_schedule(other_org, "report")
    schedule_pause(schedule=paused, note="maintenance")
    names = [row["name"] for row in json.loads(run("schedules", "--org", "acme", "--json")[0])]
    assert names == ["hourly", "nightly"]
    names = [row["name"] for row in json.loads(run("schedules", "--state", "paused", "--json")[0])]
    assert names == ["hourly"]
    assert lines("schedules", "--org", "globex", "--state", "paused") == ["No schedules."]


def test_schedules_json_has_one_object_per_schedule(org: Organization) -> None:
    schedule = make_schedule(org, "nightly", cron="30 1 * * *", timezone="America/New_York")
    assert json.loads(run("schedules", "--json")[0]) == [
        {
            "id": schedule.pk,
            "org": "acme",
            "name": "nightly",
            "trigger": "cron 30 1 * * * (America/New_York)",
            "state": "active",
            "next_run_at": "2026-03-28T01:30:00-04:00",
            "last_run_status": None,
        }
    ]


@pytest.mark.django_db
def test_schedules_rejects_unknown_org_and_state() -> None:
    assert str(failure("schedules", "--org", "nowhere")) == "org: no organization with the slug 'nowhere'"
    assert str(failure("schedules", "--state", "sleeping")) == (
        "state: 'sleeping' is not one of active, paused, completed, cancelled"
    )


# -- run_now --------------------------------------------------------------------------------------------------


def test_run_now_queues_a_manual_run_and_prints_its_id(org: Organization) -> None:
    schedule = make_schedule(org, "nightly")
    out, _ = run("run_now", "nightly")
    created = Run.objects.get(schedule=schedule)
    assert out.strip() == f"Queued run {created.pk} of schedule {schedule.pk} 'nightly'."
    assert (created.trigger, created.status, created.slot) == (RunTrigger.MANUAL, RunStatus.QUEUED, None)


def test_run_now_with_the_same_idempotency_key_returns_the_existing_run(org: Organization) -> None:
    schedule = make_schedule(org, "nightly")
    first, _ = run("run_now", str(schedule.pk), "--idempotency-key", "deploy-42")
    second, _ = run("run_now", str(schedule.pk), "--idempotency-key", "deploy-42")
    only = Run.objects.get(schedule=schedule)
    assert first.strip() == f"Queued run {only.pk} of schedule {schedule.pk} 'nightly'."
    assert second.strip() == (
        f"Run {only.pk} already exists for idempotency key 'deploy-42' (status queued); no new run was queued."
    )


def test_run_now_name_in_two_orgs_needs_org(org: Organization, other_org: Organization) -> None:
    make_schedule(org, "nightly")
    theirs = make_schedule(other_org, "nightly")
    error = failure("run_now", "nightly")
    assert str(error) == "schedule: 'nightly' names schedules in several organizations; pass --org SLUG"
    assert error.returncode == 1
    run("run_now", "nightly", "--org", "globex")
    assert list(Run.objects.values_list("schedule_id", flat=True)) == [theirs.pk]


def test_run_now_unknown_schedule_is_one_line(org: Organization, other_org: Organization) -> None:
    theirs = make_schedule(other_org, "report")
    assert str(failure("run_now", "missing")) == "schedule: no schedule named 'missing'"
    # Another organization's schedule is not found, not forbidden.
    assert str(failure("run_now", str(theirs.pk), "--org", "acme")) == (
        f"schedule: no schedule with id {theirs.pk} in organization 'acme'"
    )
    assert not Run.objects.exists()


# -- pause / resume -------------------------------------------------------------------------------------------


def test_pause_stores_the_note_and_pausing_again_is_harmless(org: Organization) -> None:
    schedule = make_schedule(org, "nightly")
    out, _ = run("pause", "nightly", "--note", "vendor outage", "--org", "acme")
    schedule.refresh_from_db()
    assert out.strip() == f"Paused schedule {schedule.pk} 'nightly'."
    assert (schedule.state, schedule.state_note) == (ScheduleState.PAUSED, "vendor outage")
    out, _ = run("pause", "nightly", "--note", "second note")
    schedule.refresh_from_db()
    assert out.strip() == f"Schedule {schedule.pk} 'nightly' was already paused."
    assert schedule.state_note == "vendor outage"


def test_pause_refuses_a_cancelled_schedule(org: Organization) -> None:
    schedule = make_schedule(org, "nightly")
    schedule_cancel(schedule=schedule)
    error = failure("pause", str(schedule.pk))
    assert (str(error), error.returncode) == (
        f"schedule {schedule.pk} 'nightly' is cancelled; only active schedules can be paused",
        1,
    )


def test_resume_reactivates_and_prints_next_run_in_the_schedules_zone(org: Organization) -> None:
    schedule = make_schedule(org, "nightly")
    schedule_pause(schedule=schedule, note="x")
    out, _ = run("resume", "nightly")
    schedule.refresh_from_db()
    assert schedule.state == ScheduleState.ACTIVE
    assert out.strip() == f"Resumed schedule {schedule.pk} 'nightly'; next run 2026-03-28T02:30:00+02:00."
    out, _ = run("resume", "nightly")
    assert out.strip() == f"Schedule {schedule.pk} 'nightly' was already active."


def test_resume_refuses_a_cancelled_schedule(org: Organization) -> None:
    schedule = make_schedule(org, "nightly")
    schedule_cancel(schedule=schedule)
    error = failure("resume", "nightly")
    assert str(error) == f"schedule {schedule.pk} 'nightly' is cancelled; only paused schedules can be resumed"
    schedule.refresh_from_db()
    assert schedule.state == ScheduleState.CANCELLED


# -- check_scheduler ------------------------------------------------------------------------------------------


def _beat(seconds_ago: float, now: datetime) -> None:
    DispatcherHeartbeat.objects.update_or_create(
        name="dispatcher", defaults={"beat_at": now - timedelta(seconds=seconds_ago)}
    )


@pytest.mark.django_db
def test_check_scheduler_fails_when_the_dispatcher_never_ran() -> None:
    error = failure("check_scheduler")
    assert (str(error), error.returncode) == ("the dispatcher has never run", 1)


@pytest.mark.django_db
def test_check_scheduler_prints_the_heartbeat_age_when_fresh() -> None:
    with time_machine.travel(NOW, tick=False):
        _beat(2.5, NOW)
        out, err = run("check_scheduler")
    assert (out.strip(), err) == ("the dispatcher ticked 2.5 s ago", "")


@pytest.mark.django_db
def test_check_scheduler_fails_on_a_stale_heartbeat() -> None:
    with time_machine.travel(NOW, tick=False):
        _beat(60, NOW)  # the default limit (ECHOFLOW_HEARTBEAT_STALE) is 30 s
        error = failure("check_scheduler")
    assert (str(error), error.returncode) == ("the dispatcher's last heartbeat was 60 s ago (limit 30 s)", 1)


@pytest.mark.django_db
def test_check_scheduler_max_age_overrides_the_setting() -> None:
    with time_machine.travel(NOW, tick=False):
        _beat(60, NOW)
        assert run("check_scheduler", "--max-age", "120")[0].strip() == "the dispatcher ticked 60.0 s ago"
        _beat(10, NOW)
        error = failure("check_scheduler", "--max-age", "5")
    assert (str(error), error.returncode) == ("the dispatcher's last heartbeat was 10 s ago (limit 5 s)", 1)


@pytest.mark.django_db
def test_check_scheduler_rejects_a_bad_max_age() -> None:
    for value in ("soon", "0", "-3", "nan"):
        error = failure("check_scheduler", "--max-age", value)
        assert (str(error), error.returncode) == (f"max_age: {value!r} is not a positive number of seconds", 2)
