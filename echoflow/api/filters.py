"""Query-string filters of the list endpoints. They only narrow a queryset already limited to the caller's
organization, so a filter naming another organization's schedule finds nothing, exactly like a missing one."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import django_filters
from django import forms
from django.db.models import Q, QuerySet
from django.db.models.fields.json import KeyTextTransform
from django_filters.fields import IsoDateTimeField
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field

from echoflow.audit.models import AuditEntry
from echoflow.observability.models import Alert, AlertRule
from echoflow.observability.selectors import alerts_with_status
from runs.models import Run, RunStatus, RunTrigger
from schedules.models import Schedule, ScheduleState
from schedules.triggers import TriggerKind


@extend_schema_field(OpenApiTypes.INT)
class IntegerFilter(django_filters.Filter):
    field_class = forms.IntegerField


class UtcDateTimeField(IsoDateTimeField):
    """An ISO-8601 instant, turned into UTC: Python accepts offsets up to ±24 h, PostgreSQL only ±15:59."""

    def to_python(self, value: Any) -> datetime | None:
        parsed = super().to_python(value)
        if parsed is None:
            return None
        try:
            return parsed.astimezone(UTC)
        except OverflowError:
            raise forms.ValidationError("is out of range once converted to UTC", code="invalid") from None


class UtcDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcDateTimeField


class ScheduleFilter(django_filters.FilterSet):
    state = django_filters.ChoiceFilter(choices=ScheduleState.choices)
    agent = django_filters.CharFilter(field_name="agent", help_text="Exact agent name.")
    trigger_kind = django_filters.ChoiceFilter(choices=TriggerKind.choices)
    label = django_filters.CharFilter(
        method="filter_label", help_text="`key` (the label is set) or `key=value` (it has that value)."
    )
    q = django_filters.CharFilter(method="filter_text", help_text="Text search in name, description and agent.")

    class Meta:
        model = Schedule
        fields: list[str] = []

    def filter_label(self, queryset: QuerySet[Schedule], name: str, value: str) -> QuerySet[Schedule]:
        key, has_value, wanted = value.partition("=")
        if not has_value:
            return queryset.filter(labels__has_key=key)
        # Containment (labels @> {"key": "value"}) is what the GIN index schedule_labels_gin_idx answers, so a value
        # no schedule has is found missing at once instead of after reading the whole organization. A label whose
        # value is a number or a boolean still matches its text; an object or array, its JSON text exactly.
        match = Q(labels__contains={key: wanted})
        try:
            parsed = json.loads(wanted)
        except ValueError:
            parsed = None
        if isinstance(parsed, bool | int | float):
            match |= Q(labels__contains={key: parsed})
        elif isinstance(parsed, dict | list):
            # KeyTextTransform takes the key as a parameter: a key with "__" cannot turn into a lookup path.
            queryset = queryset.annotate(_label_value=KeyTextTransform(key, "labels"))
            match |= Q(_label_value=wanted)
        return queryset.filter(match)

    def filter_text(self, queryset: QuerySet[Schedule], name: str, value: str) -> QuerySet[Schedule]:
        return queryset.filter(Q(name__icontains=value) | Q(description__icontains=value) | Q(agent__icontains=value))


# MultipleChoiceFilter adds DISTINCT by default (for filters across a to-many join). Status and trigger are columns
# of the run itself, so a run matches once at most, and DISTINCT over every column of the page made PostgreSQL sort
# all matching runs (and plan for 20 ms) before it could return the first 50.
class RunFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(
        choices=RunStatus.choices, distinct=False, help_text="One or more statuses."
    )
    schedule = IntegerFilter(field_name="schedule_id", help_text="Runs of this schedule (id).")
    agent = django_filters.CharFilter(
        field_name="agent", help_text="Runs made for this agent (their schedule's agent when the run was made)."
    )
    trigger = django_filters.MultipleChoiceFilter(
        choices=RunTrigger.choices, distinct=False, help_text="What created the run."
    )
    created_after = UtcDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UtcDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Run
        fields: list[str] = []


class ScheduleRunFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(
        choices=RunStatus.choices, distinct=False, help_text="One or more statuses."
    )

    class Meta:
        model = Run
        fields: list[str] = []


class AuditFilter(django_filters.FilterSet):
    schedule = IntegerFilter(method="filter_schedule", help_text="Entries about this schedule (id).")
    user = IntegerFilter(field_name="actor_id", help_text="Entries made by this user (id), by any means.")
    actor = django_filters.CharFilter(
        field_name="actor_label", help_text="Entries made by this actor label (a user name, or token:<name>)."
    )
    action = django_filters.CharFilter(
        method="filter_action", help_text="An action (schedule.update), or a family of them ending in a dot (run.)."
    )
    created_after = UtcDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UtcDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = AuditEntry
        fields: list[str] = []

    def filter_schedule(self, queryset: QuerySet[AuditEntry], name: str, value: Any) -> QuerySet[AuditEntry]:
        return queryset.filter(target_type="schedule", target_id=str(value))

    def filter_action(self, queryset: QuerySet[AuditEntry], name: str, value: str) -> QuerySet[AuditEntry]:
        if value.endswith("."):
            return queryset.filter(action__startswith=value)
        return queryset.filter(action=value)


ALERT_STATUS_CHOICES = [
    ("open", "Open: raised, not acknowledged, not resolved"),
    ("acknowledged", "Acknowledged, not resolved"),
    ("active", "Active: open or acknowledged (not resolved)"),
    ("resolved", "Resolved"),
]


class AlertFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(
        choices=ALERT_STATUS_CHOICES,
        method="filter_status",
        help_text="open (nobody acknowledged it), acknowledged, active (either: not resolved) or resolved.",
    )
    rule = django_filters.ChoiceFilter(choices=AlertRule.choices, help_text="The rule that raised the alert.")
    schedule = IntegerFilter(field_name="schedule_id", help_text="Alerts about this schedule (id).")
    raised_after = UtcDateTimeFilter(field_name="raised_at", lookup_expr="gte")
    raised_before = UtcDateTimeFilter(field_name="raised_at", lookup_expr="lt")

    class Meta:
        model = Alert
        fields: list[str] = []

    def filter_status(self, queryset: QuerySet[Alert], name: str, value: str) -> QuerySet[Alert]:
        return alerts_with_status(queryset, value)
