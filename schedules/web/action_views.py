"""Buttons on a schedule: enable, disable with a note, run now, delete after confirmation."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from echoflow.accounts.permissions import DELETE, RUN, WRITE
from runs.services import schedule_run_now as run_now_service
from schedules.services import schedule_delete as delete_service
from schedules.services import schedule_pause, schedule_resume
from schedules.web import presenters, selectors
from schedules.web.access import PageAccess, schedule_for
from schedules.web.responses import (
    current_params,
    index_url,
    is_htmx,
    page_view,
    render_html,
    toast_html,
    trigger_events,
    with_panel,
)
from schedules.web.views import render_page

NOTE_MAX = 500


def _done(
    request: HttpRequest,
    access: PageAccess,
    message: str,
    *,
    level: str = "success",
    extra_html: str = "",
    events: tuple[str, ...] = ("schedules-changed", "panel-changed"),
) -> HttpResponse:
    """The dialog closes (its region gets this empty body), a toast says what happened, the table and the open
    run log refresh."""
    if not is_htmx(request):
        messages.add_message(request, messages.SUCCESS if level == "success" else messages.WARNING, message)
        return HttpResponseRedirect(index_url({"org": access.organization.slug, **current_params(request)}))
    response = HttpResponse(extra_html + toast_html(message, level=level))
    return trigger_events(response, *events)


def _dialog(request: HttpRequest, access: PageAccess, template: str, context: dict[str, object]) -> HttpResponse:
    if is_htmx(request):
        return render(request, template, context)
    html = render_html(request, template, context)
    return render_page(request, access, selectors.TableQuery(), modal_html=html)


@page_view
@require_http_methods(["GET", "POST"])
def schedule_disable(request: HttpRequest, pk: int) -> HttpResponse:
    schedule, access = schedule_for(request, pk, WRITE)
    if request.method == "GET":
        return _dialog(request, access, "schedules/_modal_disable.html", {"schedule": schedule})
    note = request.POST.get("note", "").strip()[:NOTE_MAX]
    if schedule_pause(schedule=schedule, note=note):
        return _done(request, access, f"Disabled “{schedule.name}”{': ' + note if note else ''}.")
    state = schedule.get_state_display().lower()
    return _done(request, access, f"“{schedule.name}” is {state}, not active: nothing to disable.", level="warning")


@page_view
@require_POST
def schedule_enable(request: HttpRequest, pk: int) -> HttpResponse:
    schedule, access = schedule_for(request, pk, WRITE)
    if schedule_resume(schedule=schedule):
        row = presenters.schedule_row(schedule, now=timezone.now(), params={})
        when = f" Next run {row.next_relative}." if row.next_relative else ""
        return _done(request, access, f"Enabled “{schedule.name}”.{when}")
    state = schedule.get_state_display().lower()
    return _done(request, access, f"“{schedule.name}” is {state}, not paused: nothing to enable.", level="warning")


@page_view
@require_POST
def schedule_run_now(request: HttpRequest, pk: int) -> HttpResponse:
    """Queue a run now and open the schedule's run log to watch it. The form's key makes a double click one run."""
    schedule, access = schedule_for(request, pk, RUN)
    key = request.POST.get("key", "").strip()[:100] or None
    run, created = run_now_service(schedule=schedule, idempotency_key=key)
    message = (
        f"Queued run #{run.pk} of “{schedule.name}”; a worker picks it up within seconds."
        if created
        else f"Run #{run.pk} was already queued by this button."
    )
    params = with_panel({"org": schedule.organization.slug, **current_params(request)}, schedule_id=schedule.pk)
    if not is_htmx(request):
        messages.success(request, message)
        return HttpResponseRedirect(index_url(params))
    context = presenters.panel_context(access, schedule=schedule, now=timezone.now(), open_ids=set(), params=params)
    response = HttpResponse(render_html(request, "schedules/_panel.html", context) + toast_html(message))
    response["HX-Push-Url"] = index_url(params)
    return trigger_events(response, "schedules-changed")


@page_view
@require_http_methods(["GET", "POST"])
def schedule_delete(request: HttpRequest, pk: int) -> HttpResponse:
    schedule, access = schedule_for(request, pk, DELETE)
    if request.method == "GET":
        runs = schedule.runs.count()
        return _dialog(request, access, "schedules/_modal_delete.html", {"schedule": schedule, "runs": runs})
    name = schedule.name
    delete_service(schedule=schedule)
    params = current_params(request)
    extra = ""
    if params.get("schedule") == str(pk):
        # Its run log was open: close it, and the address no longer names it.
        extra = '<div id="panel-region" hx-swap-oob="innerHTML"></div>'
    # Only the table refreshes: a run log still showing the deleted schedule would answer 404.
    response = _done(
        request,
        access,
        f"Deleted “{name}”. Its past runs stay listed under One-off runs.",
        extra_html=extra,
        events=("schedules-changed",),
    )
    if extra and is_htmx(request):
        response["HX-Push-Url"] = index_url(with_panel({"org": access.organization.slug, **params}))
    return response
