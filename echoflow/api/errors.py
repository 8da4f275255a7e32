"""One error envelope for every failure the API answers, whoever raised it.

    {"detail": "<one sentence for a person>", "code": "<stable machine code>", "errors": {"<field>": ["<why>"]}}

``errors`` names each bad field (empty when the failure is not about fields). The services' Django
ValidationError, DRF's own validation and parse errors, conflicts and missing objects all end up here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError, IntegrityError
from django.http import Http404
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from echoflow.observability.services import AlertStateError
from runs.services import RunStateError
from schedules.services import VersionConflict


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "payload_too_large"

    def __init__(self, limit: int, size: int | None = None) -> None:
        got = f"{size} bytes" if size is not None else "more than that"
        super().__init__(f"The request body is limited to {limit} bytes ({limit // 1024} KiB); this one has {got}.")


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"
    default_detail = "The request conflicts with the current state of the resource."


class ErrorSerializer(serializers.Serializer[Any]):
    """The error envelope (for the OpenAPI schema)."""

    detail = serializers.CharField(help_text="What went wrong, in a sentence.")
    code = serializers.CharField(help_text="A stable machine-readable code, e.g. invalid, not_found, conflict.")

    def get_fields(self) -> dict[str, serializers.Field]:
        # "errors" is a Serializer attribute of its own, so this field cannot be declared on the class.
        return {
            **super().get_fields(),
            "errors": serializers.DictField(
                child=serializers.ListField(child=serializers.CharField()),
                help_text="For each bad field, why it is bad. Empty when the error is not about fields.",
            ),
        }


def _flatten(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF error details (nested dicts and lists) as {"field.sub": ["message"]}."""
    out: dict[str, list[str]] = {}
    if isinstance(detail, Mapping):
        for key, value in detail.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            for field, messages in _flatten(value, name).items():
                out.setdefault(field, []).extend(messages)
    elif isinstance(detail, list):
        for index, value in enumerate(detail):
            if isinstance(value, Mapping | list):
                for field, messages in _flatten(value, f"{prefix}.{index}" if prefix else str(index)).items():
                    out.setdefault(field, []).extend(messages)
            else:
                out.setdefault(prefix or "non_field_errors", []).append(str(value))
    else:
        out.setdefault(prefix or "non_field_errors", []).append(str(detail))
    return out


def _django_errors(exc: DjangoValidationError) -> dict[str, list[str]]:
    if hasattr(exc, "error_dict"):
        return {field: [str(m) for m in messages] for field, messages in exc.message_dict.items()}
    return {"non_field_errors": [str(m) for m in exc.messages]}


def _summary(errors: dict[str, list[str]]) -> str:
    parts = [f"{field}: {messages[0]}" for field, messages in errors.items() if messages]
    head = "; ".join(parts[:3]) + ("; …" if len(parts) > 3 else "")
    return f"The request is invalid ({head})." if head else "The request is invalid."


def envelope(detail: str, code: str, errors: dict[str, list[str]] | None = None) -> dict[str, Any]:
    return {"detail": detail, "code": code, "errors": errors or {}}


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, after mapping domain errors to HTTP ones and rewriting the body into the envelope."""
    if isinstance(exc, DjangoValidationError):
        errors = _django_errors(exc)
        return Response(envelope(_summary(errors), "invalid", errors), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, VersionConflict):
        body = envelope(str(exc), "version_conflict", {"version": [str(exc)]})
        body["current_version"] = exc.current
        return Response(body, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, RunStateError | AlertStateError):
        return Response(envelope(str(exc), "invalid_state"), status=status.HTTP_409_CONFLICT)
    if isinstance(exc, DataError | OverflowError):
        # The last line of defence: a value the validation let through and the database (or the calendar) cannot
        # hold, such as a year past 9999 once converted to UTC. Still the client's input, so a 400, not a 500.
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return Response(
            envelope(f"A value is out of the range that can be stored: {first_line}.", "out_of_range"),
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, IntegrityError):
        # A concurrent request won a race the validation could not see (two creates of the same name).
        return Response(
            envelope("The change conflicts with another one made at the same time; reload and retry.", "conflict"),
            status=status.HTTP_409_CONFLICT,
        )
    if isinstance(exc, ObjectDoesNotExist | Http404):
        # Whatever was missing (or belongs to another organization: the same answer, on purpose).
        exc = exceptions.NotFound("Not found: there is no such object here.")
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        errors = _flatten(exc.detail)
        response.data = envelope(_summary(errors), "invalid", errors)
    elif isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else exc.default_code
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        response.data = envelope(str(detail), str(code))
    else:  # Django's PermissionDenied
        response.data = envelope("You may not do this.", "permission_denied")
    return response
