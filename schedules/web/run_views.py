"""The run log panel: a schedule's runs (or the one-off runs), their attempts, retry and cancel.

While any run in the panel is not final, the panel polls itself every 2 s (see _panel.html); the runs the user
expanded stay expanded across polls because the poll says which ones are open.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from echoflow.accounts.permissions import RUN
from runs.models import Run
from runs.services import RunStateError
from runs.services import run_cancel as cancel_service
from runs.services import run_retry as retry_service
from schedules.models import Schedule
from schedules.web import presenters, selectors
from schedules.web.access import PageAccess, page_access, run_for, schedule_for
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


def _open_ids(request: HttpRequest, *extra: int) -> set[int]:
    ids = {int(part) for part in request.GET.get("open", request.POST.get("open", "")).split(",") if part.isdigit()}
    return ids | set(extra)


def _panel(
    request: HttpRequest,
    access: PageAccess,
    schedule: Schedule | None,
    *,
    open_ids: set[int],
    status: int = 200,
    toast: str = "",
    toast_level: str = "success",
) -> HttpResponse:
    params = {"org": access.organization.slug, **current_params(request)}
    params = with_panel(params, schedule_id=schedule.pk if schedule else None, adhoc=schedule is None)
    context = presenters.panel_context(access, schedule=schedule, now=timezone.now(), open_ids=open_ids, params=params)
    html = render_html(request, "schedules/_panel.html", context)
    if not is_htmx(request):
        return render_page(request, access, selectors.TableQuery(), panel_html=html, status=status)
    response = HttpResponse(html + (toast_html(toast, level=toast_level) if toast else ""), status=status)
    if request.GET.get("polling") and not context["polling"]:
        # The last run in view just finished: the table's last status and the tiles change too.
        trigger_events(response, "schedules-changed")
    return response


@page_view
@require_GET
def schedule_runs(request: HttpRequest, pk: int) -> HttpResponse:
    schedule, access = schedule_for(request, pk)
    return _panel(request, access, schedule, open_ids=_open_ids(request))


@page_view
@require_GET
def adhoc_runs(request: HttpRequest) -> HttpResponse:
    access = page_access(request, request.GET.get("org"))
    return _panel(request, access, None, open_ids=_open_ids(request))


def _after(request: HttpRequest, access: PageAccess, run: Run, message: str, *, conflict: bool) -> HttpResponse:
    response = _panel(
        request,
        access,
        run.schedule,
        open_ids=_open_ids(request, run.pk),
        status=409 if conflict else 200,
        toast=message,
        toast_level="error" if conflict else "success",
    )
    if is_htmx(request):
        response["HX-Push-Url"] = index_url(
            with_panel(
                {"org": access.organization.slug, **current_params(request)},
                schedule_id=run.schedule_id,
                adhoc=run.schedule_id is None,
            )
        )
    return trigger_events(response, "schedules-changed")


@page_view
@require_POST
def run_retry(request: HttpRequest, pk: int) -> HttpResponse:
    run, access = run_for(request, pk, RUN)
    try:
        retry_service(run=run)
    except RunStateError as exc:
        return _after(request, access, run, f"Not retried: {exc}.", conflict=True)
    return _after(request, access, run, f"Run #{run.pk} queued again with a fresh set of attempts.", conflict=False)


@page_view
@require_POST
def run_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    run, access = run_for(request, pk, RUN)
    try:
        cancel_service(run=run, reason=f"cancelled on the schedules page by {request.user.get_username()}")
    except RunStateError as exc:
        return _after(request, access, run, f"Not cancelled: {exc}.", conflict=True)
    return _after(request, access, run, f"Run #{run.pk} cancelled.", conflict=False)
