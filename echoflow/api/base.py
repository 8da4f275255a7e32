"""What every API view shares: authentication, the organization, permissions, limits, errors and the schema.

The project's REST_FRAMEWORK settings stay generic (renderers, parsers, schema class); the API's policy lives here,
on one base class, so no endpoint can forget it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextlib import ExitStack
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from drf_spectacular.openapi import AutoSchema
from rest_framework import exceptions
from rest_framework.authentication import SessionAuthentication
from rest_framework.generics import get_object_or_404
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView
from rest_framework.viewsets import GenericViewSet

from echoflow.accounts.models import ApiToken
from echoflow.api.auth import BearerTokenAuthentication, OrgContext, OrgPermission, org_context
from echoflow.api.errors import ErrorSerializer, PayloadTooLarge, api_exception_handler
from echoflow.audit.context import Actor, acting_as
from echoflow.audit.models import AuditSource

# Deeper JSON is no schedule definition or payload anyone writes by hand, and Python's parser would recurse on it.
MAX_JSON_DEPTH = 32


class TokenRateThrottle(SimpleRateThrottle):
    """settings.API_RATE_LIMIT requests per token (per user for session requests); 429 with Retry-After."""

    scope = "api"

    def get_rate(self) -> str:
        return str(settings.API_RATE_LIMIT)

    def get_cache_key(self, request: Request, view: APIView) -> str | None:
        if isinstance(request.auth, ApiToken):
            return f"throttle:api:token:{request.auth.pk}"
        if request.user is not None and request.user.is_authenticated:
            return f"throttle:api:user:{request.user.pk}"
        return None


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "must not contain the NUL character (\\u0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode text (it holds a lone surrogate escape such as \\ud800)"
    return None


def check_json_text(data: Any) -> None:
    """Refuse what the database cannot store (NUL, lone surrogates) and absurd nesting, naming where it is."""
    errors: dict[str, list[str]] = {}
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            errors.setdefault(path.split(".")[0] or "non_field_errors", []).append(
                f"is nested more than {MAX_JSON_DEPTH} levels deep"
            )
            continue
        if isinstance(value, str):
            problem = _text_problem(value)
            if problem:
                errors.setdefault(path or "non_field_errors", []).append(problem)
        elif isinstance(value, dict):
            for key, item in value.items():
                child = f"{path}.{key}" if path else str(key)
                problem = _text_problem(key)
                if problem:
                    errors.setdefault(path or "non_field_errors", []).append(f"has a key that {problem}")
                    continue
                stack.append((item, child, depth + 1))
        elif isinstance(value, list):
            stack.extend(
                (item, f"{path}.{index}" if path else str(index), depth + 1) for index, item in enumerate(value)
            )
    if errors:
        raise exceptions.ValidationError(errors)


class LimitedJSONParser(JSONParser):
    """JSON, at most settings.API_MAX_BODY_BYTES of it, holding only text the database can store."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        limit = int(settings.API_MAX_BODY_BYTES)
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise PayloadTooLarge(limit)
        try:
            data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except UnicodeDecodeError:
            raise exceptions.ParseError("The body is not UTF-8 text.") from None
        except RecursionError:
            raise exceptions.ParseError(f"The JSON is nested more than {MAX_JSON_DEPTH} levels deep.") from None
        except ValueError as exc:
            raise exceptions.ParseError(f"The body is not valid JSON: {exc}.") from None
        check_json_text(data)
        return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


ERROR_DESCRIPTIONS = {
    400: "The request is invalid: `errors` names each bad field and says why.",
    401: "No credentials, or a token that is malformed, unknown or revoked.",
    403: "The caller lacks a permission; `detail` names it.",
    404: "No such object in the caller's organization (another organization's objects answer the same).",
    405: "This path does not take this method (an id that spells a sub-resource's name, such as 'preview').",
    409: "A conflict: a stale version, or a run, schedule or alert in a state that does not allow this.",
    413: "The body is larger than the limit (64 KiB by default).",
    415: "The body is not JSON.",
    429: "Too many requests for this token; retry after the Retry-After header's seconds.",
}


class EchoFlowAutoSchema(AutoSchema):
    """Declares the error envelope for every status code the API may answer, so clients (and schemathesis) can
    rely on the schema for errors as much as for successes."""

    def get_operation(self, *args: Any, **kwargs: Any) -> Any:
        operation = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        codes = [400, 401, 403, 404, 405, 429]
        if self.method in {"POST", "PUT", "PATCH", "DELETE"}:
            codes += [409, 413, 415]
        error = self.resolve_serializer(ErrorSerializer, "response").ref
        for code in codes:
            operation["responses"].setdefault(
                str(code),
                {"description": ERROR_DESCRIPTIONS[code], "content": {"application/json": {"schema": error}}},
            )
        return operation


class ApiViewSet(GenericViewSet):
    """Base of every API endpoint. Subclasses set ``permission_map``: {action: permissions it needs}."""

    authentication_classes = [BearerTokenAuthentication, SessionAuthentication]
    permission_classes = [OrgPermission]
    throttle_classes = [TokenRateThrottle]
    parser_classes = [LimitedJSONParser]
    renderer_classes = [JSONRenderer]
    metadata_class = None
    schema = EchoFlowAutoSchema()
    permission_map: dict[str, frozenset[str]] = {}
    # Any id segment reaches the view (and a 404 in the API's JSON), not only those without a dot.
    lookup_value_regex = "[^/]+"

    def get_exception_handler(self) -> Any:
        return api_exception_handler

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        # The actor of the audit log is set in initial(), once authentication has run, and reset here.
        with ExitStack() as stack:
            self._actor_stack = stack
            return super().dispatch(request, *args, **kwargs)

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        limit = int(settings.API_MAX_BODY_BYTES)
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > limit:
            raise PayloadTooLarge(limit, length)
        super().initial(request, *args, **kwargs)
        if request.user is not None and request.user.is_authenticated:
            token = request.auth if isinstance(request.auth, ApiToken) else None
            actor = Actor(
                user_id=request.user.pk,
                label=f"token:{token.name}" if token is not None else request.user.get_username(),
                source=AuditSource.API,
                request_id=str(getattr(request, "echoflow_request_id", "") or ""),
            )
            self._actor_stack.enter_context(acting_as(actor))

    def get_object(self) -> Any:
        # Unlike DRF's, the lookup ignores the list filters: ?state=paused must not make GET /schedules/1/ a 404.
        obj = get_object_or_404(self.get_queryset(), pk=self.kwargs["pk"])
        self.check_object_permissions(self.request, obj)
        return obj

    @property
    def org(self) -> OrgContext:
        return org_context(self.request)

    def body(self) -> dict[str, Any]:
        """The JSON body, which must be an object."""
        data = self.request.data
        if not isinstance(data, dict):
            raise exceptions.ValidationError({"non_field_errors": ["The body must be a JSON object."]})
        return dict(data)
