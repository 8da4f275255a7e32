"""The editor drawer: defaults, live validation with the API's own messages, the preview, saving, conflicts and
"make recurring"."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from echoflow.accounts.models import Organization
from runs.models import RunStatus
from runs.services import run_create_adhoc
from schedules.models import Schedule
from schedules.services import schedule_update
from schedules.validation import schedule_clean
from tests.test_page_support import htmx, make_run, make_schedule, member

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 23, 0, 48, tzinfo=UTC)  # Monday 08:48 in Shanghai


def url(name: str, *args: int) -> str:
    return reverse(f"schedules_web:{name}", args=args)


@pytest.fixture
def editor(org: Organization) -> Client:
    client = Client()
    client.force_login(member(org, "editor"))
    return client


def form(org: Organization, **overrides: str) -> dict[str, str]:
    """What the drawer posts for a valid new cron schedule."""
    data = {
        "org": org.slug,
        "name": "weekday report",
        "agent": "reports",
        "description": "",
        "action_kind": "python",
        "action_name": "echoflow.echo",
        "action_config": "{}",
        "payload": '{"report": "daily"}',
        "trigger_kind": "cron",
        "cron": "0 8 * * 1-5",
        "interval_seconds": "",
        "run_at": "",
        "timezone": "Asia/Shanghai",
        "start_at": "",
        "end_at": "",
        "max_runs": "",
        "misfire_policy": "coalesce",
        "catchup_window_seconds": "3600",
        "max_concurrency": "1",
        "overlap_policy": "skip",
        "max_attempts": "3",
        "backoff_seconds": "30, 60, 300, 900, 3600",
        "timeout_seconds": "300",
        "jitter_seconds": "0",
        "priority": "5",
        "pause_after_failures": "",
        "_touched": "",
    }
    data.update(overrides)
    return data


def api_message(org: Organization, data: dict[str, Any], field: str) -> str:
    """What schedules.validation (the API's rules) says about ``field`` for ``data``."""
    with pytest.raises(ValidationError) as caught:
        schedule_clean(data, organization=org)
    return caught.value.message_dict[field][0]


def sentence(message: str) -> str:
    """The API's message as the page shows it: the same words, a capital first letter."""
    return message[:1].upper() + message[1:]


def field_error(html: str, field: str) -> str:
    match = re.search(rf'<p class="field-error" id="error-{field}"[^>]*>([^<]*)</p>', html)
    assert match, f"no error slot for {field}"
    return match.group(1).replace("&#x27;", "'").replace("&quot;", '"')


def test_new_drawer_shows_the_sensible_defaults(org: Organization, editor: Client) -> None:
    html = editor.get(url("schedule_create") + f"?org={org.slug}", **htmx("drawer-region")).content.decode()
    assert 'role="dialog"' in html
    assert 'id="id_max_attempts" name="max_attempts" value="3"' in html
    assert 'value="30, 60, 300, 900, 3600"' in html
    assert 'id="id_timeout_seconds" name="timeout_seconds" value="300"' in html
    assert '<option value="coalesce" selected>' in html
    assert '<option value="skip" selected>' in html
    assert 'id="id_trigger_kind_cron" name="trigger_kind" value="cron" checked' in html
    assert '<option value="Asia/Shanghai">' in html  # the time zone picker
    assert '<option value="echoflow.fail">' in html  # registered actions to pick from
    # Every control has a label.
    for name in ("name", "agent", "cron", "timezone", "payload", "max_attempts"):
        assert f'<label for="id_{name}">' in html


def test_live_validation_speaks_with_the_apis_messages_about_touched_fields(org: Organization, editor: Client) -> None:
    data = form(org, name="", cron="61 * * * *", timezone="Asia/Shangai", _touched="cron,timezone")
    response = editor.post(url("schedule_validate_new"), data, **htmx("editor-summary"))
    assert response.status_code == 200
    html = response.content.decode()
    api_data = {"name": "x", "trigger_kind": "cron", "cron": "61 * * * *", "timezone": "UTC"}
    assert field_error(html, "cron") == sentence(api_message(org, api_data, "cron"))
    zone = api_message(org, {**api_data, "cron": "0 8 * * *", "timezone": "Asia/Shangai"}, "timezone")
    assert "did you mean Asia/Shanghai" in zone
    assert field_error(html, "timezone") == zone  # starts with a quote: word for word
    assert field_error(html, "name") == ""  # not touched yet: no message while the user is elsewhere
    assert 'hx-swap-oob="true"' in html


def test_live_validation_reads_json_and_numbers(org: Organization, editor: Client) -> None:
    data = form(org, payload='{"report": }', max_attempts="0", _touched="payload,max_attempts")
    html = editor.post(url("schedule_validate_new"), data, **htmx()).content.decode()
    assert field_error(html, "payload").startswith("Payload (JSON) is not valid JSON: Expecting value")
    assert field_error(html, "max_attempts") == "Max attempts must be between 1 and 100; got 0"


def test_live_preview_lists_the_next_five_fire_times_in_the_schedules_zone(org: Organization, editor: Client) -> None:
    with time_machine.travel(NOW, tick=False):
        html = editor.post(url("schedule_validate_new"), form(org), **htmx()).content.decode()
    preview = html[html.index('id="editor-preview"') :]
    assert "At 08:00, Monday through Friday (Asia/Shanghai)" in preview
    times = re.findall(r"<time [^>]*>([^<]+)</time>", preview)
    assert times == [
        "Tue 24 Nov 2026 08:00 CST",
        "Wed 25 Nov 2026 08:00 CST",
        "Thu 26 Nov 2026 08:00 CST",
        "Fri 27 Nov 2026 08:00 CST",
        "Mon 30 Nov 2026 08:00 CST",
    ]
    assert "in 23 h" in preview


def test_preview_explains_a_trigger_it_cannot_compute(org: Organization, editor: Client) -> None:
    html = editor.post(url("schedule_validate_new"), form(org, cron=""), **htmx()).content.decode()
    assert "No preview yet — Cron expression is required for a cron trigger." in html


def test_create_saves_through_the_service_and_shows_the_new_schedule(org: Organization, editor: Client) -> None:
    current = f"http://testserver/schedules/?org={org.slug}&state=active"
    with time_machine.travel(NOW, tick=False):
        response = editor.post(url("schedule_create"), form(org), **htmx("drawer-region", current))
    assert response.status_code == 200
    schedule = Schedule.objects.get(name="weekday report")
    assert (schedule.cron, schedule.timezone, schedule.agent) == ("0 8 * * 1-5", "Asia/Shanghai", "reports")
    assert schedule.payload == {"report": "daily"}
    assert schedule.next_run_at == datetime(2026, 11, 24, 0, 0, tzinfo=UTC)
    html = response.content.decode()
    assert 'id="panel-region" hx-swap-oob="innerHTML"' in html  # its run log opens
    assert "Created “weekday report”" in html
    # The address keeps the user's filters and now names the new schedule; the table refreshes.
    assert response["HX-Push-Url"] == f"/schedules/?org={org.slug}&state=active&schedule={schedule.pk}"
    assert "schedules-changed" in response["HX-Trigger"]


def test_create_with_problems_answers_422_with_every_message(org: Organization, editor: Client) -> None:
    make_schedule(org, "taken")
    data = form(org, name="taken", cron="0 8 * *", backoff_seconds="30, soon")
    response = editor.post(url("schedule_create"), data, **htmx("drawer-region"))
    assert response.status_code == 422
    html = response.content.decode()
    assert field_error(html, "name") == "A schedule named 'taken' already exists in this organization"
    assert "has 4 fields" in field_error(html, "cron")
    assert field_error(html, "backoff_seconds") == (
        "Backoff (seconds) must be a non-empty list of whole seconds between 0 and 604800"
    )
    assert "3 fields need fixing" in html
    assert Schedule.objects.count() == 1


def test_editing_with_a_stale_version_shows_the_conflict_instead_of_overwriting(
    org: Organization, editor: Client
) -> None:
    schedule = make_schedule(org, "weekday report", cron="0 8 * * 1-5")
    drawer = editor.get(url("schedule_edit", schedule.pk), **htmx("drawer-region")).content.decode()
    assert f'name="version" value="{schedule.version}"' in drawer
    schedule_update(schedule=schedule, data={"cron": "0 9 * * 1-5"})  # someone else, meanwhile

    mine = form(org, cron="30 7 * * 1-5", timezone="UTC", version=str(schedule.version))
    response = editor.post(url("schedule_edit", schedule.pk), mine, **htmx("drawer-region"))
    assert response.status_code == 409
    html = response.content.decode()
    assert "Not saved: someone else changed this schedule" in html
    assert f"You started from version {schedule.version}; it is now at version {schedule.version + 1}" in html
    assert "<code>0 9 * * 1-5</code></td><td><code>30 7 * * 1-5</code>" in html  # saved now vs. yours
    assert "Discard my edits and load the latest version" in html
    schedule.refresh_from_db()
    assert schedule.cron == "0 9 * * 1-5"


def test_editing_saves_what_changed_and_bumps_the_version(org: Organization, editor: Client) -> None:
    schedule = make_schedule(org, "weekday report", cron="0 8 * * 1-5", timezone="Asia/Shanghai", agent="reports")
    data = form(org, payload='{"report": "weekly"}', version=str(schedule.version))
    response = editor.post(url("schedule_edit", schedule.pk), data, **htmx("drawer-region"))
    assert response.status_code == 200
    assert "Saved “weekday report” (payload)." in response.content.decode()
    schedule.refresh_from_db()
    assert schedule.payload == {"report": "weekly"}
    assert schedule.version == 2


def test_local_start_is_read_in_the_schedules_zone(org: Organization, editor: Client) -> None:
    with time_machine.travel(NOW, tick=False):
        data = form(org, start_at="2026-12-01T08:00", end_at="2026-11-30T08:00", _touched="start_at,end_at")
        html = editor.post(url("schedule_validate_new"), data, **htmx()).content.decode()
        assert field_error(html, "end_at") == "End must be after start_at"
        editor.post(url("schedule_create"), form(org, start_at="2026-12-01T08:00"), **htmx())
    schedule = Schedule.objects.get()
    assert schedule.start_at == datetime(2026, 12, 1, 0, 0, tzinfo=UTC)  # 08:00 in Shanghai


def test_make_recurring_prefills_an_adhoc_runs_action_and_payload(org: Organization, editor: Client) -> None:
    run, _ = run_create_adhoc(
        organization=org, action_kind="python", action_name="echoflow.echo", payload={"to": "ops@example.com"}
    )
    html = editor.get(url("schedule_create") + f"?from_run={run.pk}", **htmx("drawer-region")).content.decode()
    assert "Make it recurring" in html
    assert f"From run #{run.pk}" in html
    assert 'name="name" value="echoflow.echo (recurring)"' in html
    assert 'name="action_name" value="echoflow.echo"' in html
    payload = re.search(r'<textarea id="id_payload"[^>]*>([^<]*)</textarea>', html)
    assert payload and json.loads(payload.group(1).replace("&quot;", '"')) == {"to": "ops@example.com"}

    # Step two: say when, save. The new schedule does what the run did.
    data = form(org, name="echoflow.echo (recurring)", agent="", payload='{"to": "ops@example.com"}')
    assert editor.post(url("schedule_create"), data, **htmx()).status_code == 200
    created = Schedule.objects.get(name="echoflow.echo (recurring)")
    assert (created.action_name, created.payload) == ("echoflow.echo", {"to": "ops@example.com"})


def test_make_recurring_from_a_scheduled_run_takes_its_agent_and_a_free_name(org: Organization, editor: Client) -> None:
    source = make_schedule(org, "sync", agent="eu-1", timezone="Europe/Berlin")
    run = make_run(org, source, status=RunStatus.SUCCEEDED, payload={"table": "orders"})
    make_schedule(org, "sync (recurring)")
    html = editor.get(url("schedule_create") + f"?from_run={run.pk}", **htmx("drawer-region")).content.decode()
    assert 'name="name" value="sync (recurring) 2"' in html
    assert 'name="agent" value="eu-1"' in html
    assert 'name="timezone" value="Europe/Berlin"' in html


def test_once_and_interval_triggers_preview_in_words(org: Organization, editor: Client) -> None:
    with time_machine.travel(NOW, tick=False):
        once = form(org, trigger_kind="once", cron="", run_at="2026-12-01T09:30", timezone="Europe/Berlin")
        html = editor.post(url("schedule_validate_new"), once, **htmx()).content.decode()
        assert "Once, at Tue 01 Dec 2026 09:30 CET (Europe/Berlin)" in html
        assert len(re.findall(r"<li><time", html)) == 1
        # The fields of the kinds not chosen are ignored, whatever they still hold.
        interval = form(org, trigger_kind="interval", interval_seconds="1800", cron="garbage", _touched="cron")
        html = editor.post(url("schedule_validate_new"), interval, **htmx()).content.decode()
        assert "Every 30 minutes" in html
        assert field_error(html, "cron") == ""
        editor.post(url("schedule_create"), once, **htmx())
    created = Schedule.objects.get()
    assert created.trigger_kind == "once"
    assert created.run_at == datetime(2026, 12, 1, 8, 30, tzinfo=UTC)


def test_a_once_time_in_the_past_says_how_to_run_it_anyway(org: Organization, editor: Client) -> None:
    with time_machine.travel(NOW, tick=False):
        past = form(org, trigger_kind="once", cron="", run_at="2026-11-22T09:00", timezone="UTC", _touched="run_at")
        html = editor.post(url("schedule_validate_new"), past, **htmx()).content.decode()
        assert "is in the past" in field_error(html, "run_at")
        response = editor.post(url("schedule_create"), {**past, "run_now_if_past": "1"}, **htmx())
    assert response.status_code == 200
    next_run_at = Schedule.objects.get().next_run_at
    assert next_run_at is not None
    assert next_run_at <= NOW  # due at once: the dispatcher runs it on its next tick
