"""What a run does. Actions are looked up by kind and name; never an import path from user input.

An action receives an ``ActionContext`` and returns JSON-serializable output or raises. ``RetryableError`` and
``PermanentError`` tell the executor whether the retry policy applies; any other exception counts as retryable.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.core.exceptions import ValidationError

from schedules.models import ActionKind


class ActionError(Exception):
    retryable = True


class RetryableError(ActionError):
    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(ActionError):
    retryable = False


class ActionCancelled(ActionError):
    retryable = False


@dataclass
class ActionContext:
    run_id: int
    organization_id: int
    schedule_id: int | None
    attempt: int
    payload: Any
    config: dict[str, Any]
    trace_id: str
    deadline: float  # time.monotonic() after which the attempt has timed out
    signing_secret: str = ""
    cancel_event: threading.Event = field(default_factory=threading.Event)

    def check_cancelled(self) -> None:
        """Long-running actions call this between steps; it raises when the run was cancelled or timed out."""
        if self.cancel_event.is_set():
            raise ActionCancelled("the attempt was cancelled")

    @property
    def remaining(self) -> float:
        return max(self.deadline - time.monotonic(), 0.0)


@dataclass(frozen=True)
class AwaitingReport:
    """Returned by an event action with ``wait_for_report``: the attempt ends when the executor reports."""

    event_id: str
    type: str


PythonAction = Callable[[ActionContext], Any]
_REGISTRY: dict[str, PythonAction] = {}


def action(name: str) -> Callable[[PythonAction], PythonAction]:
    """Register a Python callable under ``name`` so schedules can refer to it."""

    def register(func: PythonAction) -> PythonAction:
        _REGISTRY[name] = func
        return func

    return register


def registered_actions() -> list[str]:
    return sorted(_REGISTRY)


# --- built-ins ------------------------------------------------------------------------------------------------------
@action("echoflow.noop")
def _noop(ctx: ActionContext) -> None:
    return None


@action("echoflow.echo")
def _echo(ctx: ActionContext) -> Any:
    return ctx.payload


@action("echoflow.sleep")
def _sleep(ctx: ActionContext) -> dict[str, float]:
    payload = ctx.payload if isinstance(ctx.payload, dict) else {}
    seconds = float(payload.get("seconds", 1))
    end = time.monotonic() + seconds
    if payload.get("cooperative") is False:
        # Behaves like an action that never checks its cancellation flag (for drills and tests): only ending
        # its process stops it.
        time.sleep(seconds)
        return {"slept": seconds}
    # Sleep in slices so that cancellation and timeouts stop it promptly.
    while (left := end - time.monotonic()) > 0:
        ctx.check_cancelled()
        ctx.cancel_event.wait(min(left, 0.2))
    ctx.check_cancelled()
    return {"slept": seconds}


@action("echoflow.fail")
def _fail(ctx: ActionContext) -> None:
    payload = ctx.payload if isinstance(ctx.payload, dict) else {}
    message = str(payload.get("message", "echoflow.fail was asked to fail"))
    if payload.get("permanent"):
        raise PermanentError(message)
    raise RetryableError(message)


# --- validation -----------------------------------------------------------------------------------------------------
def action_validate(*, kind: str, name: str, config: dict[str, Any], payload: Any) -> None:
    """Check an action definition; raise ValidationError naming the field. Shared by every entry point."""
    errors: dict[str, str] = {}
    if kind not in ActionKind.values:
        errors["action_kind"] = f"{kind!r} is not one of {', '.join(ActionKind.values)}"
    elif len(name) > 200:
        errors["action_name"] = f"is {len(name)} characters long; the limit is 200"
    elif kind == ActionKind.PYTHON:
        if not name:
            errors["action_name"] = f"is required; known actions: {', '.join(registered_actions())}"
        elif name not in _REGISTRY:
            known = ", ".join(registered_actions())
            errors["action_name"] = f"{name!r} is not a registered action; known actions: {known}"
    elif kind == ActionKind.HTTP:
        url = config.get("url") if isinstance(config, dict) else None
        if not url:
            errors["action_config"] = "an http action needs a 'url'"
        else:
            parts = urlsplit(str(url))
            if parts.scheme not in {"http", "https"} or not parts.hostname:
                errors["action_config"] = f"url {url!r} must be an absolute http:// or https:// URL"
        method = str(config.get("method", "POST")).upper() if isinstance(config, dict) else "POST"
        if method not in {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"}:
            errors["action_config"] = f"method {method!r} is not one of GET, POST, PUT, PATCH, DELETE, HEAD"
        headers = config.get("headers", {}) if isinstance(config, dict) else {}
        if not isinstance(headers, dict):
            errors["action_config"] = "headers must be an object of name: value"
    elif kind == ActionKind.EVENT:
        if not name and not (isinstance(config, dict) and config.get("type")):
            errors["action_name"] = "an event action needs the event type as its name"
        elif isinstance(config, dict) and not isinstance(config.get("wait_for_report", False), bool):
            errors["action_config"] = "wait_for_report must be true or false"
    elif kind == ActionKind.CELERY and not name:
        errors["action_name"] = "a celery action needs the task name"
    if not isinstance(config, dict):
        errors["action_config"] = "must be a JSON object"
    try:
        json.dumps(payload)
    except (TypeError, ValueError):
        errors["payload"] = "must be JSON"
    if errors:
        raise ValidationError(errors)


# --- execution ------------------------------------------------------------------------------------------------------
def action_execute(*, kind: str, name: str, ctx: ActionContext) -> Any:
    if kind == ActionKind.PYTHON:
        func = _REGISTRY.get(name)
        if func is None:
            raise PermanentError(f"action {name!r} is not registered in this worker")
        return func(ctx)
    if kind == ActionKind.HTTP:
        return _http(ctx)
    if kind == ActionKind.EVENT:
        return _event(name, ctx)
    if kind == ActionKind.CELERY:
        return _celery(name, ctx)
    raise PermanentError(f"unknown action kind {kind!r}")


def _host_allowed(host: str) -> None:
    """Refuse private, loopback and link-local targets (SSRF) unless a setting allows them."""
    conf = settings.ECHOFLOW
    if conf["HTTP_ALLOW_PRIVATE"] or host in conf["HTTP_ALLOWED_HOSTS"]:
        return
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror as exc:
        raise RetryableError(f"cannot resolve {host}: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if address.is_private or address.is_loopback or address.is_link_local or address.is_reserved:
            raise PermanentError(
                f"refused: {host} resolves to the non-public address {address}; allow it with "
                "ECHOFLOW_HTTP_ALLOWED_HOSTS or ECHOFLOW_HTTP_ALLOW_PRIVATE"
            )


def _http(ctx: ActionContext) -> dict[str, Any]:
    config = ctx.config
    url = str(config["url"])
    host = urlsplit(url).hostname or ""
    _host_allowed(host)
    method = str(config.get("method", "POST")).upper()
    body = json.dumps(
        {"run": ctx.run_id, "schedule": ctx.schedule_id, "attempt": ctx.attempt, "payload": ctx.payload},
        separators=(",", ":"),
    ).encode()
    timestamp = str(int(time.time()))
    headers = {str(k): str(v) for k, v in (config.get("headers") or {}).items()}
    headers.update(
        {
            "Content-Type": "application/json",
            "User-Agent": "EchoFlow/0.1",
            "X-EchoFlow-Run": str(ctx.run_id),
            "X-EchoFlow-Attempt": str(ctx.attempt),
            "X-EchoFlow-Trace-Id": ctx.trace_id,
            "X-EchoFlow-Timestamp": timestamp,
        }
    )
    if ctx.signing_secret:
        mac = hmac.new(ctx.signing_secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
        headers["X-EchoFlow-Signature"] = f"sha256={mac.hexdigest()}"
    timeout = max(min(ctx.remaining, float(config.get("timeout", ctx.remaining or 30))), 0.5)
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            response = client.request(method, url, content=None if method in {"GET", "HEAD"} else body, headers=headers)
    except httpx.TimeoutException as exc:
        raise RetryableError(f"timed out calling {url}: {exc}") from None
    except httpx.HTTPError as exc:
        raise RetryableError(f"connection error calling {url}: {exc}") from None
    text = response.text[:2000]
    if 200 <= response.status_code < 300:
        return {"status": response.status_code, "body": text}
    message = f"{method} {url} answered {response.status_code}: {text[:500]}"
    if response.status_code >= 500 or response.status_code in {408, 429}:
        retry_after = response.headers.get("Retry-After", "")
        raise RetryableError(message, retry_after=float(retry_after) if retry_after.isdigit() else None)
    raise PermanentError(message)


def _event(name: str, ctx: ActionContext) -> dict[str, Any] | AwaitingReport:
    from echoflow.events.bus import EventSpec, event_record

    event_type = name or str(ctx.config.get("type"))
    event = event_record(
        EventSpec(
            type=event_type,
            organization_id=ctx.organization_id,
            schedule_id=ctx.schedule_id,
            run_id=ctx.run_id,
            attempt=ctx.attempt,
            data={"payload": ctx.payload, "trace_id": ctx.trace_id},
        )
    )
    if ctx.config.get("wait_for_report"):
        return AwaitingReport(event_id=str(event.event_id), type=event_type)
    return {"event_id": str(event.event_id), "type": event_type}


def _celery(name: str, ctx: ActionContext) -> dict[str, Any]:
    from echoflow.celery import app

    queue = ctx.config.get("queue")
    result = app.send_task(name, kwargs={"payload": ctx.payload, "run_id": ctx.run_id}, queue=queue)
    return {"task_id": result.id, "task": name, "queue": queue}
