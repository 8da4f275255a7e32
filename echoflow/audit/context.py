"""The actor behind the current change: set by the request middleware, the admin, or a command."""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.http import HttpRequest, HttpResponse

from echoflow.audit.models import AuditSource


@dataclass(frozen=True)
class Actor:
    user_id: int | None = None
    label: str = ""
    source: str = AuditSource.SYSTEM
    request_id: str = ""


# Actor is a frozen dataclass, so sharing one default instance is safe.
_current: contextvars.ContextVar[Actor] = contextvars.ContextVar("echoflow_actor", default=Actor())  # noqa: B039


def current_actor() -> Actor:
    return _current.get()


@contextmanager
def acting_as(actor: Actor) -> Iterator[Actor]:
    token = _current.set(actor)
    try:
        yield actor
    finally:
        _current.reset(token)


def command_actor(command: str) -> Actor:
    return Actor(label=f"command:{command}", source=AuditSource.COMMAND, request_id=uuid.uuid4().hex)


class AuditActorMiddleware:
    """Sets the actor for each request: the user, whether it came through the admin, the API or the page, and a
    request id (the client's ``X-Request-ID`` or a new one), echoed back in the response."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = (request.headers.get("X-Request-ID") or uuid.uuid4().hex)[:64]
        path = request.path
        source = (
            AuditSource.ADMIN
            if path.startswith("/admin/")
            else AuditSource.API
            if path.startswith("/api/")
            else AuditSource.PAGE
        )
        user = getattr(request, "user", None)
        authenticated = bool(user is not None and user.is_authenticated)
        actor = Actor(
            user_id=user.pk if authenticated and user is not None else None,
            label=user.get_username() if authenticated and user is not None else "",
            source=source,
            request_id=request_id,
        )
        request.echoflow_request_id = request_id  # type: ignore[attr-defined]
        with acting_as(actor):
            response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response
