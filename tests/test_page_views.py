"""The schedules page: who sees what, the table with its filters, the 24 h tiles, and the schedule actions."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from echoflow.accounts.models import Organization
from echoflow.observability.models import AlertRule
from echoflow.observability.services import alert_acknowledge, alert_raise, alert_resolve
from runs.models import AttemptOutcome, Run, RunStatus
from runs.services import run_create_adhoc
from schedules.models import Schedule, ScheduleState
from schedules.services import schedule_pause
from tests.test_api_helpers import failing_alert
from tests.test_page_support import PASSWORD, htmx, make_run, make_schedule, member

pytestmark = pytest.mark.django_db

INDEX = reverse("schedules_web:index")
WRITE_MARKERS = ('data-action="edit"', 'data-action="disable"', 'data-action="delete"', 'id="new-schedule"')


def url(name: str, *args: int) -> str:
    return reverse(f"schedules_web:{name}", args=args)


def as_user(org: Organization, role: str) -> Client:
    client = Client()
    client.force_login(member(org, role))
    return client


# --- who sees what ------------------------------------------------------------------------------------------------
def test_anonymous_visitor_is_sent_to_the_pages_own_login(client: Client) -> None:
    response = client.get(INDEX)
    assert response.status_code == 302
    assert response["Location"].startswith(url("login"))


def test_an_htmx_request_after_the_session_ended_sends_the_browser_to_sign_in(client: Client, db: None) -> None:
    current = "http://testserver/schedules/?org=acme&state=paused"
    response = client.get(url("schedule_runs", 1), **htmx("panel-region", current))
    assert response.status_code == 401
    assert response["HX-Redirect"] == url("login") + "?next=%2Fschedules%2F%3Forg%3Dacme%26state%3Dpaused"
    assert "sign in again" in response.content.decode()


def test_login_form_signs_a_member_in_and_lands_on_the_schedules(client: Client, org: Organization) -> None:
    member(org, "viewer", username="vera", password=True)
    wrong = client.post(url("login"), {"username": "vera", "password": "nope"})
    assert "do not match an account" in wrong.content.decode()
    response = client.post(url("login"), {"username": "vera", "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == INDEX
    assert client.get(INDEX).status_code == 200


def test_user_in_no_organization_is_told_how_to_get_access(client: Client, db: None) -> None:
    client.force_login(User.objects.create_user(username="loner"))
    response = client.get(INDEX)
    assert response.status_code == 403
    assert "not in an organization yet" in response.content.decode()


def test_viewer_sees_the_table_and_no_write_or_run_controls(org: Organization) -> None:
    make_schedule(org, "nightly export")
    html = as_user(org, "viewer").get(INDEX).content.decode()
    assert "nightly export" in html
    for marker in (*WRITE_MARKERS, 'data-action="run-now"'):
        assert marker not in html
    assert "View only" in html


def test_operator_may_run_but_not_change(org: Organization) -> None:
    make_schedule(org, "nightly export")
    html = as_user(org, "operator").get(INDEX).content.decode()
    assert 'data-action="run-now"' in html
    for marker in WRITE_MARKERS:
        assert marker not in html


def test_admin_sees_every_control(org: Organization) -> None:
    make_schedule(org, "nightly export")
    html = as_user(org, "admin").get(INDEX).content.decode()
    for marker in (*WRITE_MARKERS, 'data-action="run-now"'):
        assert marker in html


def test_editor_sees_no_delete(org: Organization) -> None:
    make_schedule(org, "nightly export")
    html = as_user(org, "editor").get(INDEX).content.decode()
    assert 'data-action="edit"' in html
    assert 'data-action="delete"' not in html


@pytest.mark.parametrize(
    ("name", "with_schedule"),
    [
        ("schedule_create", False),
        ("schedule_validate_new", False),
        ("schedule_edit", True),
        ("schedule_validate", True),
        ("schedule_disable", True),
        ("schedule_enable", True),
        ("schedule_run_now", True),
        ("schedule_delete", True),
    ],
)
def test_viewer_cannot_post_any_schedule_action(org: Organization, name: str, with_schedule: bool) -> None:
    schedule = make_schedule(org, "nightly export")
    if name == "schedule_enable":
        schedule_pause(schedule=schedule)
    before = Schedule.objects.get(pk=schedule.pk)
    target = url(name, schedule.pk) if with_schedule else url(name)
    data = {"org": org.slug, "name": "sneaky", "trigger_kind": "cron", "cron": "0 1 * * *", "timezone": "UTC"}
    response = as_user(org, "viewer").post(target, {**data, "version": "1"}, **htmx())
    assert response.status_code == 403
    assert "does not allow you to" in response.content.decode()
    after = Schedule.objects.get(pk=schedule.pk)
    assert (after.version, after.state, after.name) == (before.version, before.state, before.name)
    assert Schedule.objects.count() == 1
    assert not Run.objects.exists()


def test_viewer_cannot_retry_or_cancel_runs(org: Organization) -> None:
    schedule = make_schedule(org)
    failed = make_run(org, schedule, status=RunStatus.FAILED, attempts=[(AttemptOutcome.FAILED, "boom", None)])
    queued = make_run(org, schedule, status=RunStatus.QUEUED)
    client = as_user(org, "viewer")
    assert client.post(url("run_retry", failed.pk), **htmx()).status_code == 403
    assert client.post(url("run_cancel", queued.pk), **htmx()).status_code == 403
    assert Run.objects.get(pk=failed.pk).status == RunStatus.FAILED
    assert Run.objects.get(pk=queued.pk).status == RunStatus.QUEUED


def test_operator_cannot_open_the_editor(org: Organization) -> None:
    schedule = make_schedule(org)
    client = as_user(org, "operator")
    assert client.get(url("schedule_edit", schedule.pk), **htmx()).status_code == 403
    assert client.get(url("schedule_create") + f"?org={org.slug}", **htmx()).status_code == 403


@pytest.mark.parametrize(
    ("method", "name"),
    [
        ("get", "schedule_edit"),
        ("post", "schedule_edit"),
        ("post", "schedule_validate"),
        ("get", "schedule_disable"),
        ("post", "schedule_disable"),
        ("post", "schedule_enable"),
        ("post", "schedule_run_now"),
        ("get", "schedule_delete"),
        ("post", "schedule_delete"),
        ("get", "schedule_runs"),
    ],
)
def test_another_organizations_schedule_is_not_found(
    org: Organization, other_org: Organization, method: str, name: str
) -> None:
    theirs = make_schedule(other_org, "their secret job")
    client = as_user(org, "admin")
    response = getattr(client, method)(url(name, theirs.pk), {"version": "1"}, **htmx())
    assert response.status_code == 404
    assert "their secret job" not in response.content.decode()
    assert Schedule.objects.get(pk=theirs.pk).version == theirs.version
    assert not Run.objects.filter(schedule=theirs).exists()


def test_another_organizations_runs_and_page_are_not_found(org: Organization, other_org: Organization) -> None:
    theirs = make_schedule(other_org, "their secret job")
    failed = make_run(other_org, theirs, status=RunStatus.FAILED, attempts=[(AttemptOutcome.FAILED, "x", None)])
    client = as_user(org, "admin")
    assert client.post(url("run_retry", failed.pk), **htmx()).status_code == 404
    assert client.post(url("run_cancel", failed.pk), **htmx()).status_code == 404
    assert client.get(url("schedule_create") + f"?from_run={failed.pk}", **htmx()).status_code == 404
    assert client.get(INDEX + f"?org={other_org.slug}").status_code == 404
    assert client.get(url("adhoc_runs") + f"?org={other_org.slug}", **htmx()).status_code == 404
    assert Run.objects.get(pk=failed.pk).status == RunStatus.FAILED
    # A shared link naming their schedule opens a "not found" panel that says nothing about it.
    html = client.get(INDEX + f"?schedule={theirs.pk}").content.decode()
    assert "Schedule not found" in html
    assert "their secret job" not in html


def test_errors_outside_htmx_are_readable_pages(org: Organization, other_org: Organization) -> None:
    theirs = make_schedule(other_org, "their secret job")
    response = as_user(org, "admin").get(url("schedule_edit", theirs.pk))
    assert response.status_code == 404
    html = response.content.decode()
    assert "<h1" in html
    assert "No such schedule" in html


# --- the table ----------------------------------------------------------------------------------------------------
NOW = datetime(2026, 11, 23, 0, 48, tzinfo=UTC)  # a Monday, 08:48 in Shanghai


def test_table_says_the_trigger_in_words_and_the_next_run_in_the_schedules_zone(org: Organization) -> None:
    with time_machine.travel(NOW, tick=False):
        make_schedule(org, "report", cron="0 8 * * 1-5", timezone="Asia/Shanghai", agent="reports")
        heartbeat = make_schedule(org, "heartbeat", trigger_kind="interval", interval_seconds=1800, cron="")
        html = as_user(org, "viewer").get(INDEX).content.decode()
    assert "At 08:00, Monday through Friday (Asia/Shanghai)" in html
    assert "Tue 24 Nov 08:00 CST" in html  # next run in the schedule's zone
    assert "in 23 h" in html
    assert "Every 30 minutes" in html
    assert heartbeat.next_run_at is not None
    assert heartbeat.next_run_at.strftime("%a %d %b %H:%M UTC") in html
    minutes = round((heartbeat.next_run_at - NOW).total_seconds() / 60)
    assert (f"in {minutes} min" if minutes else "now") in html


def _names(html: str) -> list[str]:
    return re.findall(r'class="row-link"[^>]*>([^<]+)<span class="sr-only">', html)


def test_filters_search_and_sort_come_from_the_url(org: Organization) -> None:
    make_schedule(org, "alpha sync", agent="eu-1")
    beta = make_schedule(org, "beta export", agent="us-1", description="nightly warehouse dump")
    make_schedule(org, "gamma sync", agent="eu-1")
    schedule_pause(schedule=beta, note="upstream down")
    client = as_user(org, "viewer")

    assert _names(client.get(INDEX).content.decode()) == ["alpha sync", "beta export", "gamma sync"]
    assert _names(client.get(INDEX + "?state=paused").content.decode()) == ["beta export"]
    assert _names(client.get(INDEX + "?agent=eu-1").content.decode()) == ["alpha sync", "gamma sync"]
    assert _names(client.get(INDEX + "?q=warehouse").content.decode()) == ["beta export"]
    assert _names(client.get(INDEX + "?sort=-name").content.decode()) == ["gamma sync", "beta export", "alpha sync"]
    html = client.get(INDEX + "?state=paused").content.decode()
    assert 'value="paused" selected' in html  # the filter control shows the URL's filter after a refresh
    assert "upstream down" in html


def test_filtering_with_htmx_swaps_the_table_and_puts_the_filters_in_the_address(org: Organization) -> None:
    make_schedule(org, "alpha sync", agent="eu-1")
    make_schedule(org, "beta export", agent="us-1")
    client = as_user(org, "viewer")
    current = f"http://testserver/schedules/?org={org.slug}&schedule=5"
    response = client.get(
        INDEX, {"org": org.slug, "q": "", "state": "", "agent": "us-1", "sort": "name"}, **htmx("table-region", current)
    )
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="table-region"')
    assert "<html" not in html
    assert _names(html) == ["beta export"]
    # Empty and default parameters are dropped; the open run log is kept.
    assert response["HX-Push-Url"] == f"/schedules/?org={org.slug}&agent=us-1&schedule=5"
    # The table's own refresh (after a change elsewhere) does not add a history entry.
    refresh = client.get(INDEX, {"org": org.slug}, **htmx("table-region", trigger="table-region"))
    assert "HX-Push-Url" not in refresh


def test_paging_keeps_the_filters(org: Organization) -> None:
    for number in range(30):
        make_schedule(org, f"job {number:02d}", agent="batch")
    client = as_user(org, "viewer")
    first = client.get(INDEX + "?agent=batch").content.decode()
    assert len(_names(first)) == 25
    assert "page 1 of 2" in first
    assert f"/schedules/?org={org.slug}&amp;agent=batch&amp;page=2" in first
    second = client.get(INDEX + "?agent=batch&page=2").content.decode()
    assert _names(second) == [f"job {n}" for n in range(25, 30)]


def test_empty_states_say_what_to_do(org: Organization) -> None:
    editor_html = as_user(org, "editor").get(INDEX).content.decode()
    assert "No schedules yet" in editor_html
    assert "Create the first schedule" in editor_html
    viewer = as_user(org, "viewer")
    assert "ask an editor" in viewer.get(INDEX).content.decode()
    make_schedule(org, "alpha")
    none_match = viewer.get(INDEX + "?q=zzz").content.decode()
    assert "No schedules match these filters" in none_match
    assert "Clear filters" in none_match


def test_tiles_and_success_rate_cover_the_last_24_hours(org: Organization, other_org: Organization) -> None:
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    with time_machine.travel(now, tick=False):
        good = make_schedule(org, "good")
        flaky = make_schedule(org, "flaky")
        for took in (1, 2, 3):
            make_run(org, good, took=timedelta(seconds=took), created_at=now - timedelta(hours=1))
        make_run(org, flaky, status=RunStatus.FAILED, took=timedelta(seconds=11), created_at=now - timedelta(hours=2))
        make_run(org, flaky, status=RunStatus.QUEUED, created_at=now - timedelta(minutes=1))
        make_run(org, good, created_at=now - timedelta(hours=30))  # outside the window
        make_run(other_org, None, status=RunStatus.FAILED)  # another tenant's
        failing_alert(flaky)
        alert_acknowledge(alert=failing_alert(good))  # someone is on it: not open, counted in the note
        resolved = failing_alert(make_schedule(org, "recovered"))
        alert_resolve(rule=resolved.rule, key=resolved.key, note="run 3 succeeded")
        failing_alert(make_schedule(other_org, "theirs"))  # another tenant's
        alert_raise(rule=AlertRule.DISPATCHER_STALLED, key="dispatcher", title="The dispatcher has not ticked")
        html = as_user(org, "viewer").get(INDEX).content.decode()
    tiles = html[html.index('id="tiles"') : html.index("</section>", html.index('id="tiles"'))]
    values = re.findall(r'class="tile-value">([^<]+)<', tiles)
    # 5 runs created in 24 h; 3 of 4 verdicts succeeded; p95 of 1, 2, 3, 11 s is 9.8 s; two open alerts: flaky's
    # and the system-wide one (the dispatcher concerns every organization).
    assert values == ["5", "75 %", "9.8 s", "2"]
    assert "Open alerts" in tiles and "tile-alert" in tiles
    assert "not acknowledged, not resolved; 1 more acknowledged" in tiles
    rows = {name: html.index(f">{name}<span") for name in ("good", "flaky")}
    good_row = html[rows["good"] : html.index("</tr>", rows["good"])]
    flaky_row = html[rows["flaky"] : html.index("</tr>", rows["flaky"])]
    assert "100 %" in good_row
    assert "3 of 3 finished runs" in good_row
    assert "0 %" in flaky_row


def test_tiles_partial_refreshes_alone(org: Organization) -> None:
    response = as_user(org, "viewer").get(url("tiles") + f"?org={org.slug}", **htmx("tiles"))
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="tiles"')
    assert "no finished runs yet" in html
    assert "Open alerts" in html and "tile-alert" not in html  # nothing raised: the tile is calm


# --- actions -----------------------------------------------------------------------------------------------------
def test_disable_asks_for_an_optional_note_then_enable_resumes(org: Organization) -> None:
    schedule = make_schedule(org, "nightly export")
    client = as_user(org, "editor")
    dialog = client.get(url("schedule_disable", schedule.pk), **htmx("modal-region")).content.decode()
    assert 'name="note"' in dialog
    assert "Disable “nightly export”?" in dialog

    response = client.post(url("schedule_disable", schedule.pk), {"note": "upstream API down"}, **htmx())
    assert response.status_code == 200
    assert "Disabled “nightly export”: upstream API down." in response.content.decode()
    assert "schedules-changed" in response["HX-Trigger"]
    schedule.refresh_from_db()
    assert (schedule.state, schedule.state_note) == (ScheduleState.PAUSED, "upstream API down")

    again = client.post(url("schedule_disable", schedule.pk), {}, **htmx()).content.decode()
    assert "is paused, not active: nothing to disable" in again

    client.post(url("schedule_enable", schedule.pk), **htmx())
    schedule.refresh_from_db()
    assert schedule.state == ScheduleState.ACTIVE


def test_run_now_queues_one_run_per_click_and_opens_the_run_log(org: Organization) -> None:
    schedule = make_schedule(org, "nightly export")
    client = as_user(org, "operator")
    response = client.post(url("schedule_run_now", schedule.pk), {"key": "k1"}, **htmx("panel-region"))
    assert response.status_code == 200
    run = Run.objects.get(schedule=schedule)
    html = response.content.decode()
    assert f"Run #{run.pk}" in html
    assert "every 2s" in html  # the run is not final: the panel polls
    assert f"schedule={schedule.pk}" in response["HX-Push-Url"]
    # A double click posts the same key: still one run.
    twice = client.post(url("schedule_run_now", schedule.pk), {"key": "k1"}, **htmx("panel-region"))
    assert "already queued" in twice.content.decode()
    assert Run.objects.filter(schedule=schedule).count() == 1


def test_delete_asks_first_and_keeps_the_run_history(org: Organization) -> None:
    schedule = make_schedule(org, "nightly export")
    run = make_run(org, schedule)
    client = as_user(org, "admin")
    dialog = client.get(url("schedule_delete", schedule.pk), **htmx("modal-region")).content.decode()
    assert "cannot be undone" in dialog
    assert "Its 1 past run stays" in dialog
    current = f"http://testserver/schedules/?org={org.slug}&schedule={schedule.pk}"
    response = client.post(url("schedule_delete", schedule.pk), **htmx(current_url=current))
    assert response.status_code == 200
    assert not Schedule.objects.filter(pk=schedule.pk).exists()
    assert Run.objects.filter(pk=run.pk, schedule=None).exists()
    html = response.content.decode()
    assert "Deleted “nightly export”" in html
    assert 'id="panel-region" hx-swap-oob="innerHTML"' in html  # its open run log closes
    assert "schedule=" not in response["HX-Push-Url"]


def test_posts_without_htmx_redirect_back_with_a_message(org: Organization) -> None:
    schedule = make_schedule(org, "nightly export")
    client = as_user(org, "editor")
    response = client.post(url("schedule_disable", schedule.pk), {"note": "maintenance"})
    assert response.status_code == 302
    page = client.get(response["Location"]).content.decode()
    assert "Disabled “nightly export”: maintenance." in page


def test_one_off_runs_panel_lists_runs_without_a_schedule(org: Organization) -> None:
    run, _ = run_create_adhoc(organization=org, action_kind="python", action_name="echoflow.echo", payload={"a": 1})
    html = as_user(org, "editor").get(INDEX + "?panel=adhoc").content.decode()
    assert "One-off runs" in html
    assert f"Run #{run.pk}" in html
    assert 'data-action="make-recurring"' in html
