"""The Django admin for schedules and runs: pages render, saving goes through the services, actions act."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import time_machine
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.messages import get_messages
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from echoflow.accounts.models import Organization
from echoflow.events.models import OutboxEvent
from runs.models import AttemptOutcome, DispatcherHeartbeat, Run, RunAttempt, RunStatus, RunTrigger
from runs.services import schedule_run_now
from schedules.admin import RECENT_RUNS, validation_errors
from schedules.models import Schedule, ScheduleState
from schedules.services import schedule_create, schedule_update

CHANGELIST = reverse("admin:schedules_schedule_changelist")
ADD = reverse("admin:schedules_schedule_add")
RUNS = reverse("admin:runs_run_changelist")


def change_url(schedule: Schedule) -> str:
    return reverse("admin:schedules_schedule_change", args=[schedule.pk])


def make_schedule(org: Organization, name: str = "report", **data: Any) -> Schedule:
    defaults: dict[str, Any] = {
        "name": name,
        "trigger_kind": "cron",
        "cron": "0 8 * * 1-5",
        "timezone": "Asia/Shanghai",
        "action_name": "echoflow.noop",
    }
    return schedule_create(organization=org, data={**defaults, **data})


def make_run(schedule: Schedule, *, status: str = RunStatus.QUEUED, key: str = "", **fields: Any) -> Run:
    now = timezone.now()
    return Run.objects.create(
        organization_id=schedule.organization_id,
        schedule=schedule,
        idempotency_key=key or f"test:{schedule.pk}:{Run.objects.count()}",
        trigger=RunTrigger.SCHEDULE,
        slot=now,
        due_at=now,
        status=status,
        action_kind=schedule.action_kind,
        action_name=schedule.action_name,
        **fields,
    )


def make_failed_run(schedule: Schedule, *, error: str = "boom: the report server said 503") -> Run:
    started = timezone.now() - timedelta(minutes=5)
    run = make_run(
        schedule,
        status=RunStatus.FAILED,
        attempts=3,
        max_attempts=3,
        started_at=started,
        finished_at=started + timedelta(minutes=4),
        error=error,
    )
    for number in (1, 2, 3):
        RunAttempt.objects.create(
            run=run,
            number=number,
            started_at=started + timedelta(minutes=number),
            finished_at=started + timedelta(minutes=number, seconds=2),
            outcome=AttemptOutcome.FAILED,
            error=error,
            worker="celery@worker-7",
            duration_ms=2000,
        )
    return run


def add_form(org: Organization, **overrides: Any) -> dict[str, Any]:
    """What the browser posts from the add page."""
    data = {
        "organization": org.pk,
        "name": "nightly-export",
        "description": "",
        "agent": "exporter",
        "labels": "{}",
        "trigger_kind": "cron",
        "cron": "30 2 * * *",
        "interval_seconds": "",
        "run_at_0": "",
        "run_at_1": "",
        "timezone": "Europe/Berlin",
        "start_at_0": "",
        "start_at_1": "",
        "end_at_0": "",
        "end_at_1": "",
        "max_runs": "",
        "catchup_window_seconds": "3600",
        "misfire_policy": "coalesce",
        "jitter_seconds": "0",
        "max_concurrency": "1",
        "overlap_policy": "skip",
        "max_attempts": "3",
        "backoff_seconds": "[30, 60, 300]",
        "timeout_seconds": "300",
        "priority": "5",
        "pause_after_failures": "",
        "action_kind": "python",
        "action_name": "echoflow.noop",
        "action_config": "{}",
        "payload": "{}",
    }
    data.update(overrides)
    return data


def change_form(schedule: Schedule, **overrides: Any) -> dict[str, Any]:
    """What the browser posts from the change page of ``schedule`` as loaded now (cron schedules only)."""
    data = add_form(
        schedule.organization,
        name=schedule.name,
        description=schedule.description,
        agent=schedule.agent,
        cron=schedule.cron,
        timezone=schedule.timezone,
        backoff_seconds=str(schedule.backoff_seconds),
        action_name=schedule.action_name,
        loaded_version=schedule.version,
        # The read-only inline of recent runs still posts its management form.
        **{"runs-TOTAL_FORMS": "0", "runs-INITIAL_FORMS": "0", "runs-MIN_NUM_FORMS": "0", "runs-MAX_NUM_FORMS": "0"},
        # The alert rule inline, untouched: its empty form with the default threshold.
        **{
            "alert_rule-TOTAL_FORMS": "1",
            "alert_rule-INITIAL_FORMS": "0",
            "alert_rule-MIN_NUM_FORMS": "0",
            "alert_rule-MAX_NUM_FORMS": "1",
            "alert_rule-0-consecutive_failures": "3",
            "alert_rule-0-enabled": "on",
            "alert_rule-0-id": "",
            "alert_rule-0-schedule": str(schedule.pk),
        },
    )
    del data["organization"]  # read-only once created
    data.update(overrides)
    return data


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def form_errors(response: Any) -> dict[str, list[str]]:
    return dict(response.context["adminform"].form.errors)


# --- schedules: pages --------------------------------------------------------------------------------------------
def test_schedule_changelist_renders_trigger_and_filters(admin_client: Client, org, other_org) -> None:
    make_schedule(org, "shanghai-report", agent="reporter")
    make_schedule(other_org, "globex-sync", trigger_kind="interval", cron="", interval_seconds=1800, agent="syncer")

    response = admin_client.get(CHANGELIST)
    assert response.status_code == 200
    content = response.content.decode()
    assert "cron 0 8 * * 1-5 (Asia/Shanghai)" in content
    assert "every 30 minutes" in content

    filtered = admin_client.get(CHANGELIST, {"organization__id__exact": other_org.pk, "state": "active"})
    assert filtered.status_code == 200
    assert "globex-sync" in filtered.content.decode()
    assert "shanghai-report" not in filtered.content.decode()

    by_kind = admin_client.get(CHANGELIST, {"trigger_kind": "cron", "agent": "reporter"})
    assert [s.name for s in by_kind.context["cl"].result_list] == ["shanghai-report"]

    searched = admin_client.get(CHANGELIST, {"q": "syncer"})
    assert [s.name for s in searched.context["cl"].result_list] == ["globex-sync"]


def test_schedule_change_page_shows_next_five_fire_times_in_schedule_zone(client: Client, admin_user, org) -> None:
    # 2026-10-01 00:30 UTC is Thursday 08:30 in Shanghai: today's 08:00 has passed.
    with time_machine.travel(datetime(2026, 10, 1, 0, 30, tzinfo=UTC), tick=False):
        client.force_login(admin_user)
        schedule = make_schedule(org)
        response = client.get(change_url(schedule))

    assert response.status_code == 200
    content = response.content.decode()
    expected = [
        "Fri 2026-10-02 08:00:00 (UTC+08:00)",
        "Mon 2026-10-05 08:00:00 (UTC+08:00)",
        "Tue 2026-10-06 08:00:00 (UTC+08:00)",
        "Wed 2026-10-07 08:00:00 (UTC+08:00)",
        "Thu 2026-10-08 08:00:00 (UTC+08:00)",
    ]
    assert "".join(f"<li>{line}</li>" for line in expected) in content
    assert "Fri 2026-10-09" not in content  # five, not more


def test_fire_times_change_offset_across_a_dst_end(client: Client, admin_user, org) -> None:
    # Central Europe leaves summer time on Sunday 2026-10-25.
    with time_machine.travel(datetime(2026, 10, 23, 12, 0, tzinfo=UTC), tick=False):
        client.force_login(admin_user)
        schedule = make_schedule(org, cron="0 9 * * *", timezone="Europe/Berlin")
        content = client.get(change_url(schedule)).content.decode()

    assert "<li>Sat 2026-10-24 09:00:00 (UTC+02:00)</li><li>Sun 2026-10-25 09:00:00 (UTC+01:00)</li>" in content


def test_schedule_change_page_shows_counters_read_only_and_twenty_latest_runs(admin_client: Client, org) -> None:
    schedule = make_schedule(org)
    runs = [schedule_run_now(schedule=schedule)[0] for _ in range(24)]
    failed = make_failed_run(schedule, error="Traceback: first line of the error\nsecond line")

    response = admin_client.get(change_url(schedule))

    assert response.status_code == 200
    content = response.content.decode()
    form = response.context["adminform"].form
    for counter in ("runs_count", "missed_count", "consecutive_failures", "version", "next_run_at", "state"):
        assert counter not in form.fields  # shown, not editable
    assert "Recent runs (latest 20)" in content
    assert reverse("admin:runs_run_change", args=[failed.pk]) in content
    assert "Traceback: first line of the error" in content
    assert "second line" not in content
    shown = [run for run in runs if reverse("admin:runs_run_change", args=[run.pk]) + '"' in content]
    assert shown == runs[-19:]  # the failed run plus the 19 newest run-now runs


# --- schedules: saving through the services -----------------------------------------------------------------------
def test_add_with_invalid_cron_shows_the_services_error_and_writes_nothing(admin_client: Client, org) -> None:
    response = admin_client.post(ADD, add_form(org, cron="61 * * * *"))

    assert response.status_code == 200
    assert "minute: 61 is outside 0-59" in response.content.decode()
    assert form_errors(response)["cron"] == ["minute: 61 is outside 0-59"]
    assert not Schedule.objects.exists()
    assert not OutboxEvent.objects.exists()


def test_add_with_a_taken_name_shows_the_error_on_the_name(admin_client: Client, org) -> None:
    make_schedule(org, "nightly-export")

    response = admin_client.post(ADD, add_form(org))

    assert response.status_code == 200
    assert form_errors(response)["name"] == ["a schedule named 'nightly-export' already exists in this organization"]
    assert Schedule.objects.count() == 1


def test_add_creates_the_schedule_through_the_service(admin_client: Client, admin_user, org) -> None:
    response = admin_client.post(ADD, add_form(org))

    assert response.status_code == 302
    schedule = Schedule.objects.get(name="nightly-export")
    assert schedule.organization == org
    assert schedule.created_by == admin_user
    assert schedule.backoff_seconds == [30, 60, 300]
    assert schedule.next_run_at is not None  # computed by schedule_create
    assert list(OutboxEvent.objects.values_list("type", flat=True)) == ["schedule.created"]


def test_change_updates_through_the_service_and_bumps_the_version(admin_client: Client, org) -> None:
    schedule = make_schedule(org)

    response = admin_client.post(change_url(schedule), change_form(schedule, description="send it to the board"))

    assert response.status_code == 302
    schedule.refresh_from_db()
    assert schedule.description == "send it to the board"
    assert schedule.version == 2
    event = OutboxEvent.objects.get(type="schedule.updated")
    assert event.data["changed"] == ["description"]


def test_saving_a_busy_schedule_ignores_runs_that_arrived_since_the_page_loaded(admin_client: Client, org) -> None:
    schedule = make_schedule(org)
    loaded = [schedule_run_now(schedule=schedule)[0] for _ in range(RECENT_RUNS)]
    # What the browser posts for the read-only inline it rendered: the 20 runs it saw.
    inline = {"runs-TOTAL_FORMS": str(len(loaded)), "runs-INITIAL_FORMS": str(len(loaded))}
    for index, run in enumerate(reversed(loaded)):
        inline |= {f"runs-{index}-id": str(run.pk), f"runs-{index}-schedule": str(schedule.pk)}
    schedule_run_now(schedule=schedule)  # the list moved on meanwhile

    response = admin_client.post(change_url(schedule), change_form(schedule, description="busy", **inline))

    assert response.status_code == 302
    schedule.refresh_from_db()
    assert schedule.description == "busy"
    assert Run.objects.filter(schedule=schedule).count() == RECENT_RUNS + 1


def test_service_errors_keep_their_field_or_say_which_key_they_are_about() -> None:
    exc = ValidationError({"cron": "minute: 61 is outside 0-59", "delay_seconds": "must not be negative"})

    assert validation_errors(exc, {"cron": object()}) == {
        "cron": ["minute: 61 is outside 0-59"],
        None: ["delay_seconds: must not be negative"],
    }


def test_change_with_a_stale_version_shows_a_conflict_and_keeps_the_other_edit(admin_client: Client, org) -> None:
    schedule = make_schedule(org)
    stale = change_form(schedule, description="mine")
    schedule_update(schedule=schedule, data={"description": "theirs"}, expected_version=1)

    response = admin_client.post(change_url(schedule), stale)

    assert response.status_code == 200
    content = response.content.decode()
    assert "the schedule was changed by someone else (now at version 2); reload and retry" in content
    assert "\nmine</textarea>" in content  # the user's input is kept on the form
    schedule.refresh_from_db()
    assert (schedule.description, schedule.version) == ("theirs", 2)


def test_change_with_an_invalid_trigger_changes_nothing(admin_client: Client, org) -> None:
    schedule = make_schedule(org)

    response = admin_client.post(
        change_url(schedule), change_form(schedule, cron="0 8 * * 1-5", timezone="Asia/Shangai", description="x")
    )

    assert response.status_code == 200
    assert "did you mean Asia/Shanghai" in form_errors(response)["timezone"][0]
    schedule.refresh_from_db()
    assert (schedule.timezone, schedule.description, schedule.version) == ("Asia/Shanghai", "", 1)


def test_delete_goes_through_the_service(admin_client: Client, org) -> None:
    schedule = make_schedule(org)

    response = admin_client.post(reverse("admin:schedules_schedule_delete", args=[schedule.pk]), {"post": "yes"})

    assert response.status_code == 302
    assert not Schedule.objects.exists()
    assert OutboxEvent.objects.filter(type="schedule.deleted", schedule_id=schedule.pk).exists()


# --- schedules: actions ------------------------------------------------------------------------------------------
def act(client: Client, url: str, action: str, objects: list[Any]) -> Any:
    return client.post(url, {"action": action, ACTION_CHECKBOX_NAME: [obj.pk for obj in objects]})


def test_disable_then_enable_changes_state_and_says_how_many(admin_client: Client, org) -> None:
    active = make_schedule(org, "a")
    already_paused = make_schedule(org, "b")
    already_paused.state = ScheduleState.PAUSED
    already_paused.save()

    response = act(admin_client, CHANGELIST, "disable_schedules", [active, already_paused])

    assert response.status_code == 302
    active.refresh_from_db()
    assert active.state == ScheduleState.PAUSED
    assert active.state_note == "paused in the admin by admin"
    assert messages_of(response) == ["Disabled 1 schedule; skipped 1 schedule not active."]

    response = act(admin_client, CHANGELIST, "enable_schedules", [active, already_paused])

    assert {s.state for s in Schedule.objects.all()} == {ScheduleState.ACTIVE}
    assert messages_of(response)[-1] == "Enabled 2 schedules."


def test_run_now_queues_a_manual_run(admin_client: Client, org) -> None:
    schedule = make_schedule(org)

    response = act(admin_client, CHANGELIST, "run_schedules_now", [schedule])

    run = Run.objects.get(schedule=schedule)
    assert (run.status, run.trigger, run.action_name) == (RunStatus.QUEUED, RunTrigger.MANUAL, "echoflow.noop")
    assert messages_of(response) == [f"Queued 1 run (#{run.pk}); the dispatcher sends them to a worker."]


# --- runs --------------------------------------------------------------------------------------------------------
def test_run_changelist_and_change_page_render_with_attempts(admin_client: Client, org, other_org) -> None:
    schedule = make_schedule(org)
    failed = make_failed_run(schedule)
    queued = make_run(make_schedule(other_org, "other"), key="other-key")

    response = admin_client.get(RUNS, {"status": "failed", "trigger": "schedule", "organization__id__exact": org.pk})
    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [failed]
    searched = admin_client.get(RUNS, {"q": "other-key"})
    assert list(searched.context["cl"].result_list) == [queued]
    assert list(admin_client.get(RUNS, {"q": "report"}).context["cl"].result_list) == [failed]

    page = admin_client.get(reverse("admin:runs_run_change", args=[failed.pk]))
    assert page.status_code == 200
    content = page.content.decode()
    assert content.count("celery@worker-7") == 3  # one row per attempt
    assert 'name="_save"' not in content  # read-only: runs change only through actions


def test_runs_cannot_be_added_or_edited_in_the_admin(admin_client: Client, org) -> None:
    run = make_failed_run(make_schedule(org))

    assert admin_client.get(reverse("admin:runs_run_add")).status_code == 403
    response = admin_client.post(reverse("admin:runs_run_change", args=[run.pk]), {"status": "succeeded"})
    assert response.status_code == 403
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED


def test_retry_requeues_a_failed_run_and_warns_about_the_others(admin_client: Client, org) -> None:
    schedule = make_schedule(org)
    failed = make_failed_run(schedule)
    succeeded = make_run(schedule, status=RunStatus.SUCCEEDED)

    response = act(admin_client, RUNS, "retry_runs", [failed, succeeded])

    failed.refresh_from_db()
    assert failed.status == RunStatus.QUEUED
    assert failed.max_attempts == 3 + schedule.max_attempts
    succeeded.refresh_from_db()
    assert succeeded.status == RunStatus.SUCCEEDED
    assert messages_of(response) == [
        f"Not retried: run {succeeded.pk} is succeeded; only failed, timed-out or cancelled runs can be retried.",
        "Retried 1 run: queued again with a fresh attempt budget.",
    ]


def test_cancel_cancels_a_queued_run_and_warns_about_finished_ones(admin_client: Client, org) -> None:
    schedule = make_schedule(org)
    queued = make_run(schedule)
    failed = make_failed_run(schedule)

    response = act(admin_client, RUNS, "cancel_runs", [queued, failed])

    queued.refresh_from_db()
    assert queued.status == RunStatus.CANCELLED
    assert queued.status_reason == "cancelled in the admin by admin"
    failed.refresh_from_db()
    assert failed.status == RunStatus.FAILED
    assert messages_of(response) == [f"Not cancelled: run {failed.pk} is already failed.", "Cancelled 1 run."]


def test_attempt_and_heartbeat_admins_are_read_only(admin_client: Client, org) -> None:
    make_failed_run(make_schedule(org))
    DispatcherHeartbeat.objects.create(name="dispatcher", beat_at=timezone.now(), hostname="beat-1")

    attempts = admin_client.get(reverse("admin:runs_runattempt_changelist"), {"outcome": "failed"})
    assert attempts.status_code == 200
    assert len(attempts.context["cl"].result_list) == 3
    heartbeats = admin_client.get(reverse("admin:runs_dispatcherheartbeat_changelist"))
    assert heartbeats.status_code == 200
    assert "beat-1" in heartbeats.content.decode()
    assert admin_client.get(reverse("admin:runs_runattempt_add")).status_code == 403
    assert admin_client.get(reverse("admin:runs_dispatcherheartbeat_add")).status_code == 403
