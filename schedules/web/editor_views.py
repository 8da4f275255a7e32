"""The editor drawer: create and edit, live validation with the next fire times, and "make recurring"."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from echoflow.accounts.permissions import WRITE
from runs.models import Run
from schedules.models import Schedule
from schedules.services import VersionConflict, schedule_create, schedule_update
from schedules.web import presenters, selectors
from schedules.web.access import PageAccess, page_access, run_for, schedule_for
from schedules.web.forms import editor_check, editor_differences, editor_from_post, editor_from_run, editor_initial
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


def _drawer(request: HttpRequest, access: PageAccess, context: dict[str, Any], *, status: int = 200) -> HttpResponse:
    html = render_html(request, "schedules/_drawer.html", context)
    if is_htmx(request):
        return HttpResponse(html, status=status)
    return render_page(request, access, selectors.TableQuery(), drawer_html=html, status=status)


def _touched(request: HttpRequest) -> set[str]:
    return {name for name in request.POST.get("_touched", "").split(",") if name}


def _saved(request: HttpRequest, access: PageAccess, schedule: Schedule, message: str) -> HttpResponse:
    """After a save the drawer closes and the page shows the schedule: its run log opens, the table refreshes."""
    params = {"org": schedule.organization.slug, **current_params(request)}
    params = with_panel(params, schedule_id=schedule.pk)
    if not is_htmx(request):
        messages.success(request, message)
        return HttpResponseRedirect(index_url(params))
    panel = presenters.panel_context(access, schedule=schedule, now=timezone.now(), open_ids=set(), params=params)
    html = (
        '<div id="panel-region" hx-swap-oob="innerHTML">'
        + render_html(request, "schedules/_panel.html", panel)
        + "</div>"
        + toast_html(message)
    )
    response = HttpResponse(html)
    response["HX-Push-Url"] = index_url(params)
    return trigger_events(response, "schedules-changed")


def _new_name(run: Run) -> str:
    base = f"{run.schedule.name if run.schedule else run.action_name or run.action_kind} (recurring)"
    return selectors.unique_schedule_name(organization=run.organization, base=base)


@page_view
@require_http_methods(["GET", "POST"])
def schedule_new(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    if request.method == "POST":
        access = page_access(request, request.POST.get("org"), WRITE)
        values = editor_from_post(request.POST)
        run_now_if_past = bool(request.POST.get("run_now_if_past"))
        data, errors = editor_check(
            values, organization=access.organization, instance=None, now=now, run_now_if_past=run_now_if_past
        )
        if not errors:
            try:
                schedule = schedule_create(organization=access.organization, data=data, user=request.user, now=now)
            except ValidationError as exc:
                errors = {key: messages_[0] for key, messages_ in exc.message_dict.items()}
            else:
                return _saved(request, access, schedule, f"Created “{schedule.name}”. {_next_words(schedule)}")
        context = presenters.editor_context(
            access, values=values, schedule=None, errors=errors, now=now, run_now_if_past=run_now_if_past
        )
        return _drawer(request, access, context, status=422)

    source_run: Run | None = None
    ref = request.GET.get("from_run", "")
    if ref:
        if not ref.isdigit():
            raise Http404("No such run.")
        source_run, access = run_for(request, int(ref), WRITE)
        values = editor_from_run(run=source_run, name=_new_name(source_run))
    else:
        access = page_access(request, request.GET.get("org"), WRITE)
        values = editor_initial()
    context = presenters.editor_context(access, values=values, schedule=None, errors={}, now=now, source_run=source_run)
    # A blank new schedule starts in the browser's time zone (page.js), when that is a zone we know.
    context["guess_zone"] = source_run is None
    return _drawer(request, access, context)


def _next_words(schedule: Schedule) -> str:
    row = presenters.schedule_row(schedule, now=timezone.now(), params={})
    if row.next_local:
        return f"Next run {row.next_relative} ({row.next_local})."
    return f"It is {schedule.get_state_display().lower()}."


@page_view
@require_http_methods(["GET", "POST"])
def schedule_edit(request: HttpRequest, pk: int) -> HttpResponse:
    schedule, access = schedule_for(request, pk, WRITE)
    now = timezone.now()
    if request.method == "GET":
        values = editor_initial(schedule=schedule)
        context = presenters.editor_context(access, values=values, schedule=schedule, errors={}, now=now)
        return _drawer(request, access, context)

    values = editor_from_post(request.POST)
    version_text = request.POST.get("version", "")
    expected = int(version_text) if version_text.isdigit() else -1
    try:
        if expected != schedule.version:
            raise VersionConflict(schedule.version)
        data, errors = editor_check(values, organization=access.organization, instance=schedule, now=now)
        if errors:
            context = presenters.editor_context(access, values=values, schedule=schedule, errors=errors, now=now)
            return _drawer(request, access, context, status=422)
        saved, changes = schedule_update(schedule=schedule, data=data, expected_version=expected, now=now)
    except VersionConflict as exc:
        schedule.refresh_from_db()
        conflict = {
            "current": exc.current,
            "loaded": version_text or "unknown",
            "differences": editor_differences(values, schedule),
            "reload_url": reverse("schedules_web:schedule_edit", args=[schedule.pk]),
        }
        context = presenters.editor_context(
            access, values=values, schedule=schedule, errors={}, now=now, conflict=conflict
        )
        # The form keeps the version it was loaded with: saving again conflicts again until the user reloads.
        context["version"] = version_text
        return _drawer(request, access, context, status=409)
    except ValidationError as exc:
        errors = {key: messages_[0] for key, messages_ in exc.message_dict.items()}
        context = presenters.editor_context(access, values=values, schedule=schedule, errors=errors, now=now)
        return _drawer(request, access, context, status=422)
    what = ", ".join(sorted(changes)) if changes else "nothing changed"
    return _saved(request, access, saved, f"Saved “{saved.name}” ({what}).")


@page_view
@require_POST
def schedule_validate_new(request: HttpRequest) -> HttpResponse:
    access = page_access(request, request.POST.get("org"), WRITE)
    return _feedback(request, access, schedule=None)


@page_view
@require_POST
def schedule_validate(request: HttpRequest, pk: int) -> HttpResponse:
    schedule, access = schedule_for(request, pk, WRITE)
    return _feedback(request, access, schedule=schedule)


def _feedback(request: HttpRequest, access: PageAccess, *, schedule: Schedule | None) -> HttpResponse:
    """As the user types: the message of every touched field (empty when fine) and the next fire times."""
    now = timezone.now()
    values = editor_from_post(request.POST)
    run_now_if_past = bool(request.POST.get("run_now_if_past"))
    _, errors = editor_check(
        values, organization=access.organization, instance=schedule, now=now, run_now_if_past=run_now_if_past
    )
    touched = _touched(request) if request.POST.get("_all") != "1" else None
    context = presenters.editor_context(
        access, values=values, schedule=schedule, errors=errors, now=now, touched=touched
    )
    return HttpResponse(render_html(request, "schedules/_editor_feedback.html", context))
