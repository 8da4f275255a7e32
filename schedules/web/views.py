"""The schedules page: the full page, the table and the tiles. Drawer, actions and run log live next door
(editor_views, action_views, run_views); every write goes through schedules.services / runs.services."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import views as auth_views
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from schedules.models import ScheduleState
from schedules.web import presenters, selectors
from schedules.web.access import PageAccess, page_access, schedule_for
from schedules.web.responses import current_params, index_url, is_htmx, page_view, render_html, with_panel


def render_page(
    request: HttpRequest,
    access: PageAccess,
    query: selectors.TableQuery,
    *,
    drawer_html: str = "",
    panel_html: str = "",
    modal_html: str = "",
    status: int = 200,
) -> HttpResponse:
    """The whole page; a drawer, panel or dialog already rendered can be placed in it (no-JavaScript links and
    shared URLs show the same thing htmx would have swapped in)."""
    now = timezone.now()
    context: dict[str, Any] = {
        **presenters.table_context(access, query, now=now),
        **presenters.tiles_context(access.organization, now=now),
        "access": access,
        "query": query,
        "states": ScheduleState.choices,
        "agents": selectors.schedule_agents(organization=access.organization),
        "drawer_html": drawer_html,
        "panel_html": panel_html,
        "modal_html": modal_html,
        "adhoc_url": index_url(with_panel(presenters.base_params(access, query), adhoc=True)),
    }
    return render(request, "schedules/page.html", context, status=status)


def _panel_for_url(request: HttpRequest, access: PageAccess, params: dict[str, str]) -> str:
    """The run log named by ``?schedule=`` or ``?panel=adhoc``; a schedule that is gone (or not the user's)
    shows the same "not found" panel, so the link reveals nothing."""
    now = timezone.now()
    ref = request.GET.get("schedule", "")
    if ref:
        try:
            if not ref.isdigit():
                raise Http404
            schedule, schedule_access = schedule_for(request, int(ref))
        except Http404:
            return render_html(request, "schedules/_panel_missing.html", {"close_url": index_url(with_panel(params))})
        context = presenters.panel_context(schedule_access, schedule=schedule, now=now, open_ids=set(), params=params)
        return render_html(request, "schedules/_panel.html", context)
    if request.GET.get("panel") == "adhoc":
        context = presenters.panel_context(access, schedule=None, now=now, open_ids=set(), params=params)
        return render_html(request, "schedules/_panel.html", context)
    return ""


@page_view
@require_GET
def index(request: HttpRequest) -> HttpResponse:
    access = page_access(request, request.GET.get("org"))
    query = selectors.TableQuery.from_params(request.GET)
    params = presenters.base_params(access, query)
    if is_htmx(request) and request.headers.get("HX-Target") == "table-region":
        response = render(request, "schedules/_table.html", presenters.table_context(access, query, now=timezone.now()))
        if request.headers.get("HX-Trigger") != "table-region":
            # A filter, sort or page link: the address bar follows, keeping the open run log.
            kept = {k: v for k, v in current_params(request).items() if k in {"schedule", "panel"}}
            response["HX-Push-Url"] = index_url({**params, **kept})
        return response
    panel_params = {**params, **{k: str(request.GET[k]) for k in ("schedule", "panel") if k in request.GET}}
    return render_page(request, access, query, panel_html=_panel_for_url(request, access, panel_params))


@page_view
@require_GET
def tiles(request: HttpRequest) -> HttpResponse:
    access = page_access(request, request.GET.get("org"))
    return render(request, "schedules/_tiles.html", presenters.tiles_context(access.organization, now=timezone.now()))


class LoginView(auth_views.LoginView):
    """The page's own sign-in (the admin's refuses users who are not staff, and most users are not)."""

    template_name = "schedules/login.html"
    redirect_authenticated_user = True

    def get_default_redirect_url(self) -> str:
        return reverse("schedules_web:index")


class LogoutView(auth_views.LogoutView):
    def get_default_redirect_url(self) -> str:
        return reverse("schedules_web:login")
