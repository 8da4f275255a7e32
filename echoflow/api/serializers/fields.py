"""Serializer fields that carry a value's type and leave the rules to the services."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.utils.dateparse import parse_datetime
from drf_spectacular.plumbing import list_hash
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers


@extend_schema_field(OpenApiTypes.DATETIME)
class InstantField(serializers.Field):
    """An ISO-8601 date-time, parsed as given: a value without a UTC offset stays naive, so the service that owns
    the rule (triggers, backfill) can say that it needs one, instead of DRF silently assuming UTC."""

    default_error_messages = {
        "invalid": "{value!r} is not an ISO-8601 date-time (e.g. 2026-10-01T08:00:00+02:00)",
        "type": "must be an ISO-8601 date-time string",
    }

    def to_internal_value(self, data: Any) -> datetime:
        if not isinstance(data, str):
            self.fail("type")
        try:
            parsed = parse_datetime(data.strip())
        except ValueError:
            parsed = None
        if parsed is None:
            self.fail("invalid", value=data[:64])
        assert parsed is not None
        return parsed

    def to_representation(self, value: datetime) -> str:
        return value.isoformat()


class RenderedInstantField(serializers.DateTimeField):
    """An output instant that may arrive as an ISO-8601 string (a selector's JSON shape), rendered like every other
    instant of the API (UTC, ``Z``)."""

    def to_representation(self, value: datetime | str) -> Any:
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return super().to_representation(value)


def documented_enum(
    choices: Sequence[tuple[str, str]], *, inline: bool = False, **kwargs: Any
) -> serializers.CharField:
    """A text field whose schema lists the values the service accepts; the service checks them (one place).

    The enum id is the one drf-spectacular gives a model field with the same choices, so both share one component.
    ``inline`` keeps a subset of a model's choices (under the same field name) out of the named enum components.
    """
    enum: dict[str, Any] = {"type": "string", "enum": [value for value, _ in choices]}
    schema = {"allOf": [enum]} if inline else {**enum, "x-spec-enum-id": list_hash(list(choices))}

    @extend_schema_field(schema)
    class EnumText(serializers.CharField):
        pass

    return EnumText(**kwargs)
