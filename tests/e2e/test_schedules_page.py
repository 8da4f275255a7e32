"""The schedules page end to end: a person in a real browser, a live server, a real worker and a dispatcher.

One journey, in the order a person would go: sign in, create a cron schedule in the drawer (watching the live
validation and the preview), run it now and watch it succeed in the run log; make a failing schedule, retry its
run, disable it with a note; refresh and find the same view, with its alert in the tiles. Screenshots at desktop
and phone widths go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import os

# Playwright's sync API runs an event loop in this thread; the ORM calls the test makes are still synchronous.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

import re
from typing import Any

import pytest

from echoflow.accounts.models import Organization
from echoflow.observability.processor import events_process
from echoflow.observability.services import schedule_alert_rule_set
from runs.models import Run, RunStatus
from schedules.models import Schedule, ScheduleState
from tests.e2e.conftest import DESKTOP, PHONE, needs_browser, screenshot
from tests.test_page_support import PASSWORD, member

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
    needs_browser,
]

TIMEOUT_MS = 20_000


def sign_in(page: Any, base: str, username: str) -> None:
    page.goto(f"{base}/schedules/")
    page.get_by_label("User name", exact=True).fill(username)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Schedules", exact=True).wait_for()


def field(scope: Any, label: str) -> Any:
    """A form control found by its accessible name, as a screen reader would announce it."""
    return scope.get_by_role("textbox", name=label, exact=True).or_(
        scope.get_by_role("combobox", name=label, exact=True)
    )


def create_schedule(page: Any, *, name: str, action: str, payload: str, cron: str, zone: str, attempts: str) -> None:
    from playwright.sync_api import expect

    page.locator("#new-schedule").click()
    drawer = page.get_by_role("dialog", name="Create a schedule")
    expect(drawer).to_be_visible()
    field(drawer, "Name").fill(name)
    field(drawer, "Agent").fill("reports")
    field(drawer, "Action name").fill(action)
    field(drawer, "Payload (JSON)").fill(payload)
    field(drawer, "Max attempts").fill(attempts)
    field(drawer, "Time zone").fill(zone)
    field(drawer, "Cron expression").fill(cron)


def test_a_person_schedules_runs_retries_and_disables_in_the_browser(
    dispatcher: list[BaseException], browser: Any, live_server: Any, org: Organization
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    member(org, "admin", username="ada", password=True)
    base = live_server.url
    context = browser.new_context(viewport=DESKTOP, timezone_id="UTC")
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    try:
        sign_in(page, base, "ada")
        expect(page.get_by_text("No schedules yet")).to_be_visible()

        # --- a cron schedule through the drawer: live validation, then the preview ---------------------------
        create_schedule(
            page,
            name="Weekday report",
            action="echoflow.echo",
            payload='{"report": "daily"}',
            cron="61 8 * * 1-5",
            zone="Asia/Shanghai",
            attempts="3",
        )
        drawer = page.locator("#editor")
        expect(drawer.locator("#error-cron")).to_have_text("Minute: 61 is outside 0-59")
        expect(field(drawer, "Cron expression")).to_have_attribute("aria-invalid", "true")
        field(drawer, "Cron expression").fill("0 8 * * 1-5")
        expect(drawer.locator("#error-cron")).to_be_empty()
        preview = drawer.locator("#editor-preview")
        expect(preview).to_contain_text("At 08:00, Monday through Friday (Asia/Shanghai)")
        expect(preview.locator("li")).to_have_count(5)
        expect(preview.locator("li").first).to_contain_text("08:00 CST")
        screenshot(page, "schedule-drawer-desktop", scroll_to="#editor .group-3")

        drawer.get_by_role("button", name="Create schedule").click()
        expect(page.locator("#editor")).to_have_count(0)
        panel = page.locator("#run-panel")
        expect(panel.get_by_role("heading", name="Weekday report")).to_be_visible()
        expect(panel).to_contain_text("No runs yet")
        report = Schedule.objects.get(name="Weekday report")
        assert (report.cron, report.timezone, report.payload) == ("0 8 * * 1-5", "Asia/Shanghai", {"report": "daily"})
        assert re.search(rf"schedule={report.pk}", page.url)

        # --- run it now; the log shows it succeed without a reload --------------------------------------------
        panel.locator("[data-action=run-now]").click()
        succeeded = panel.locator("li.run[data-status=succeeded]")
        expect(succeeded).to_have_count(1)
        succeeded.locator("summary").click()
        expect(succeeded.locator(".attempt")).to_contain_text("Attempt 1")
        expect(succeeded.locator(".out")).to_contain_text('"report": "daily"')
        expect(panel).to_contain_text("All runs shown are final")

        # --- make it recurring: from the run, a new schedule doing the same thing in two steps ---------------
        succeeded.locator("[data-action=make-recurring]").click()
        drawer = page.get_by_role("dialog", name="Make it recurring")
        expect(field(drawer, "Name")).to_have_value("Weekday report (recurring)")
        expect(field(drawer, "Action name")).to_have_value("echoflow.echo")
        expect(field(drawer, "Payload (JSON)")).to_have_value(re.compile(r'"report": "daily"'))
        field(drawer, "Cron expression").fill("30 18 * * 5")
        expect(drawer.locator("#editor-preview")).to_contain_text("At 18:30, only on Friday (Asia/Shanghai)")
        drawer.get_by_role("button", name="Create schedule").click()
        expect(page.locator("#run-panel").get_by_role("heading", name="Weekday report (recurring)")).to_be_visible()
        expect(page.locator("#table-region .row-link")).to_have_count(2)
        page.keyboard.press("Escape")
        expect(page.locator("#run-panel")).to_have_count(0)

        # --- a failing schedule: fail, retry, fail again, disable with a note --------------------------------
        create_schedule(
            page,
            name="Flaky export",
            action="echoflow.fail",
            payload='{"message": "warehouse refused the connection"}',
            cron="0 3 * * *",
            zone="Europe/Berlin",
            attempts="1",
        )
        page.locator("#editor").get_by_role("button", name="Create schedule").click()
        panel = page.locator("#run-panel")
        expect(panel.get_by_role("heading", name="Flaky export")).to_be_visible()
        panel.locator("[data-action=run-now]").click()
        failed = panel.locator("li.run[data-status=failed]")
        expect(failed).to_have_count(1)
        expect(failed).to_contain_text("warehouse refused the connection")
        expect(failed).to_contain_text("Attempts 1 of 1")
        failed.locator("[data-action=retry]").click()
        expect(panel.locator("li.run[data-status=failed]")).to_contain_text("Attempts 2 of 2")
        flaky = Schedule.objects.get(name="Flaky export")
        run = Run.objects.get(schedule=flaky)
        assert (run.status, run.attempts) == (RunStatus.FAILED, 2)
        expect(panel.locator(".attempt")).to_have_count(2)  # the retried run stays expanded: both attempts
        expect(panel.locator(".attempt").nth(1)).to_contain_text("warehouse refused the connection")
        screenshot(page, "run-log-desktop")

        panel.locator("[data-action=disable]").click()
        dialog = page.get_by_role("dialog", name="Disable “Flaky export”?")
        field(dialog, "Note (optional)").fill("warehouse migration until Friday")
        dialog.get_by_role("button", name="Disable").click()
        expect(panel.locator(".badge.state-paused")).to_be_visible()
        expect(panel).to_contain_text("warehouse migration until Friday")
        flaky.refresh_from_db()
        assert (flaky.state, flaky.state_note) == (ScheduleState.PAUSED, "warehouse migration until Friday")
        # With a threshold of 1, its failures raise an alert once the event processor reads them (beat would run
        # it every 2 s); the "Open alerts" tile counts it after the reload below.
        schedule_alert_rule_set(schedule=flaky, consecutive_failures=1)
        assert events_process().alerts_raised == 1

        # --- filter, refresh: the same view -------------------------------------------------------------------
        page.get_by_label("State", exact=True).select_option("paused")
        expect(page.locator("#table-region .row-link")).to_have_count(1)
        expect(page).to_have_url(re.compile(r"state=paused"))
        page.reload()
        expect(page.get_by_label("State", exact=True)).to_have_value("paused")
        rows = page.locator("#table-region tbody tr")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("Flaky export")
        expect(rows.first).to_contain_text("Paused")
        expect(rows.first).to_contain_text("warehouse migration until Friday")
        expect(page.locator("#run-panel li.run[data-status=failed]")).to_have_count(1)  # the run log came back too
        page.keyboard.press("Escape")
        page.get_by_label("State", exact=True).select_option("")
        expect(page.locator("#table-region .row-link")).to_have_count(3)
        expect(page.locator("#tiles")).to_contain_text("Open alerts")
        expect(page.locator("#tiles .tile-alert .tile-value")).to_have_text("1")
        screenshot(page, "schedules-table-desktop")

        # --- phone width: the same page, stacked ---------------------------------------------------------------
        phone = browser.new_context(viewport=PHONE, storage_state=context.storage_state(), timezone_id="UTC")
        small = phone.new_page()
        small.set_default_timeout(TIMEOUT_MS)
        small.goto(f"{base}/schedules/?org={org.slug}")
        expect(small.locator("#table-region .row-link")).to_have_count(3)
        screenshot(small, "schedules-table-phone")
        small.get_by_role("link", name=re.compile(r"^Weekday report\s*: open its run log$")).click()
        expect(small.locator("#run-panel li.run[data-status=succeeded]")).to_have_count(1)
        small.locator("#run-panel li.run summary").first.click()
        screenshot(small, "run-log-phone")
        small.keyboard.press("Escape")
        small.locator("#new-schedule").click()
        expect(small.get_by_role("dialog", name="Create a schedule")).to_be_visible()
        field(small, "Name").fill("Hourly sync")
        field(small, "Cron expression").fill("@hourly")
        expect(small.locator("#editor-preview li")).to_have_count(5)
        screenshot(small, "schedule-drawer-phone", scroll_to="#editor .group-3")
        small.keyboard.press("Escape")
        expect(small.locator("#editor")).to_have_count(0)
        phone.close()
    except Exception:
        screenshot(page, "failure-desktop")
        raise
    finally:
        context.close()
    assert dispatcher == []
