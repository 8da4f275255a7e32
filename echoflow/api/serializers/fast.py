"""Read-only model serializers without DRF's per-value overhead.

A page of 50 runs or schedules cost about 11 ms of serialization: for each of ~30 fields of each row, DRF's
``Serializer.to_representation`` walks the field's source, checks for ``PKOnlyObject``, and (for date-times) looks up
the current time zone through ``asgiref``'s context-local storage — more than the whole page's SQL
(``docs/benchmarks.md`` §5). ``FastRepresentation`` plans each field once per serializer instance (one per request;
a list's rows share it) and then writes each value with what the field's ``to_representation`` would produce. Fields
it has no plan for (nested serializers, custom fields) go through DRF's own path, value by value.

The output is the same, value for value: ``tests/test_api_fast_serializers.py`` compares it with DRF's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.db.models import Model
from rest_framework import ISO_8601, serializers
from rest_framework.fields import SkipField, get_attribute, is_simple_callable
from rest_framework.relations import PKOnlyObject

Plan = list[tuple[str, Callable[[Any], Any]]]


def _iso_datetime(field: serializers.DateTimeField) -> Callable[[Any], Any] | None:
    """DateTimeField.to_representation for the default ISO-8601 format: aware value in the field's time zone,
    ``+00:00`` written ``Z``. None when the field is not that simple (another format or no time zone)."""
    output_format = getattr(field, "format", None)
    if output_format is None:
        from rest_framework.settings import api_settings

        output_format = api_settings.DATETIME_FORMAT
    if not isinstance(output_format, str) or output_format.lower() != ISO_8601:
        return None
    zone = field.timezone if hasattr(field, "timezone") else field.default_timezone()
    if zone is None:
        return None
    fallback = field.to_representation

    def convert(value: Any) -> Any:
        if not value or isinstance(value, str) or value.tzinfo is None:
            return fallback(value)
        text = value.astimezone(zone).isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text

    return convert


def _reader(field: serializers.Field) -> Callable[[Any], Any] | None:
    """How to read the field's value from an instance as DRF would; None when only ``field.get_attribute`` can
    (a relation, a nested serializer, a whole-instance source, a dotted source)."""
    if isinstance(field, serializers.RelatedField | serializers.BaseSerializer) or field.source == "*":
        return None
    if len(field.source_attrs) != 1:
        return None
    attrs = field.source_attrs
    (attribute,) = attrs
    fallback = field.get_attribute

    def read(instance: Any) -> Any:
        if isinstance(instance, Model):  # not a Mapping: what get_attribute does, without its ABC check
            try:
                value = getattr(instance, attribute)
            except ObjectDoesNotExist:
                return None
            except AttributeError:
                return fallback(instance)  # its defaults, SkipField or error
            return value() if callable(value) and is_simple_callable(value) else value
        try:
            return get_attribute(instance, attrs)  # what Field.get_attribute calls, with its callables and mappings
        except (KeyError, AttributeError):
            return fallback(instance)

    return read


def _field_plan(field: serializers.Field) -> Callable[[Any], Any]:
    """One field's value of an instance, as ``Serializer.to_representation`` writes it."""
    if (
        isinstance(field, serializers.PrimaryKeyRelatedField)
        and field.pk_field is None
        and field.use_pk_only_optimization()
        and len(field.source_attrs) == 1
    ):
        # RelatedField.get_attribute + to_representation: the foreign key's id, without a query.
        name = field.source_attrs[0]
        return lambda instance: instance.serializable_value(name)
    read = _reader(field)
    if read is None:
        # DRF's own path, for this field only.
        def generic(instance: Any) -> Any:
            attribute = field.get_attribute(instance)
            check = attribute.pk if isinstance(attribute, PKOnlyObject) else attribute
            return None if check is None else field.to_representation(attribute)

        return generic
    convert: Callable[[Any], Any] | None
    if isinstance(field, serializers.JSONField) and not field.binary:
        convert = None  # JSONField.to_representation returns the value as it is
    elif isinstance(field, serializers.DateTimeField) and type(field).to_representation is (
        serializers.DateTimeField.to_representation
    ):
        convert = _iso_datetime(field) or field.to_representation
    else:
        convert = field.to_representation
    if convert is None:
        return read
    to_value = convert

    def planned(instance: Any) -> Any:
        value = read(instance)
        return None if value is None else to_value(value)

    return planned


class FastRepresentation(serializers.Serializer[Any]):
    """Mix into a read-only ModelSerializer (before it) to serialize its rows from a per-request plan."""

    _plan: Plan

    def to_representation(self, instance: Any) -> Any:
        plan = getattr(self, "_plan", None)
        if plan is None:
            plan = self._plan = [(str(field.field_name), _field_plan(field)) for field in self._readable_fields]
        row = {}
        for name, value_of in plan:
            try:
                row[name] = value_of(instance)
            except SkipField:
                continue
        return row
