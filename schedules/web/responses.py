"""Plumbing every page view shares: login, readable error responses, htmx headers, toasts and URLs."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from typing import Any, Concatenate, ParamSpec
from urllib.parse import parse_qsl, urlencode, urlsplit

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import resolve_url
from django.template.loader import render_to_string
from django.urls import reverse

from schedules.web.access import NoOrganization

P = ParamSpec("P")
View = Callable[Concatenate[HttpRequest, P], HttpResponse]

# A URL name, resolved per request (resolve_url), after the URLconf has loaded.
LOGIN_URL = "schedules_web:login"


def is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true" and not request.headers.get("HX-History-Restore-Request")


def error_response(request: HttpRequest, status: int, message: str) -> HttpResponse:
    """A readable error: a short plain text for htmx (page.js shows it as a toast), a page otherwise."""
    if is_htmx(request):
        return HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")
    titles = {403: "Not allowed", 404: "Not found", 409: "Conflict"}
    html = render_to_string(
        "schedules/error.html",
        {"status": status, "title": titles.get(status, "Something went wrong"), "message": message},
        request=request,
    )
    return HttpResponse(html, status=status)


def _sign_in_again(request: HttpRequest) -> HttpResponse:
    """Not signed in (or the session ended). A page goes to the login form; an htmx request must not swap the
    login form into a drawer, so it asks htmx to load the login page instead, coming back to where the user was."""
    login = resolve_url(LOGIN_URL)
    if not is_htmx(request):
        return redirect_to_login(request.get_full_path(), login)
    back = urlsplit(request.headers.get("HX-Current-URL", "")).path or reverse("schedules_web:index")
    query = urlsplit(request.headers.get("HX-Current-URL", "")).query
    response = HttpResponse(
        "Your session has ended; sign in again.", status=401, content_type="text/plain; charset=utf-8"
    )
    response["HX-Redirect"] = f"{login}?{urlencode({'next': back + ('?' + query if query else '')})}"
    return response


def page_view(view: View[P]) -> View[P]:
    """Signed-in members only (the page's own login form); 404 and 403 as readable messages."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: P.args, **kwargs: P.kwargs) -> HttpResponse:
        if not request.user.is_authenticated:
            return _sign_in_again(request)
        try:
            response = view(request, *args, **kwargs)
        except NoOrganization:
            html = render_to_string("schedules/no_org.html", {}, request=request)
            response = HttpResponse(html, status=403)
        except Http404 as exc:
            response = error_response(request, 404, str(exc) or "Not found.")
        except PermissionDenied as exc:
            response = error_response(request, 403, str(exc) or "You are not allowed to do that.")
        response.headers.setdefault("Vary", "HX-Request, HX-Target")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    return wrapper


def trigger_events(response: HttpResponse, *events: str) -> HttpResponse:
    if events:
        response["HX-Trigger"] = json.dumps(dict.fromkeys(events, True))
    return response


def toast_html(message: str, *, level: str = "success") -> str:
    """A toast appended to #toasts by an out-of-band swap."""
    return render_to_string("schedules/_toast_oob.html", {"message": message, "level": level})


def index_url(params: Mapping[str, str]) -> str:
    query = urlencode({k: v for k, v in params.items() if v})
    return f"{reverse('schedules_web:index')}{'?' + query if query else ''}"


def current_params(request: HttpRequest) -> dict[str, str]:
    """The query of the page the user is on (htmx tells it in HX-Current-URL), for URLs that keep the view."""
    current = request.headers.get("HX-Current-URL", "")
    return dict(parse_qsl(urlsplit(current).query)) if current else {}


def with_panel(params: Mapping[str, str], *, schedule_id: int | None = None, adhoc: bool = False) -> dict[str, str]:
    """``params`` with the run log panel set to one schedule, to the ad-hoc runs, or closed."""
    out = {k: v for k, v in params.items() if k not in {"schedule", "panel"}}
    if schedule_id is not None:
        out["schedule"] = str(schedule_id)
    elif adhoc:
        out["panel"] = "adhoc"
    return out


def render_html(request: HttpRequest, template: str, context: dict[str, Any]) -> str:
    return render_to_string(template, context, request=request)
