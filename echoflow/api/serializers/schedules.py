"""Schedules on the wire.

Request bodies are *described* here (for the OpenAPI schema, derived from the model) but validated by
``schedules.validation.schedule_clean``, the one place the rules live: the views hand it the raw JSON.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfoNotFoundError

from rest_framework import serializers

from echoflow.api.serializers.fast import FastRepresentation
from echoflow.api.serializers.fields import InstantField, documented_enum
from schedules.management.commands.preview import MAX_COUNT
from schedules.models import Schedule
from schedules.triggers import TriggerKind
from schedules.validation import FIELDS

READ_ONLY = (
    "id",
    "state",
    "state_note",
    "next_run_at",
    "last_run_at",
    "last_run_status",
    "consecutive_failures",
    "runs_count",
    "missed_count",
    "skipped_count",
    "version",
    "created_at",
    "updated_at",
)


class ScheduleSerializer(FastRepresentation, serializers.ModelSerializer[Schedule]):
    trigger_description = serializers.SerializerMethodField()

    class Meta:
        model = Schedule
        fields = ["id", *FIELDS, *READ_ONLY[1:], "trigger_description"]
        read_only_fields = fields

    def get_trigger_description(self, schedule: Schedule) -> str:
        """The trigger in words, e.g. "cron 0 8 * * 1-5 (Asia/Shanghai)"."""
        try:
            return schedule.trigger.describe()
        except (ZoneInfoNotFoundError, ValueError, AssertionError):
            return f"{schedule.trigger_kind} (no longer valid)"


class ScheduleCreateSerializer(serializers.ModelSerializer[Schedule]):
    """The body of a create (and, with ``version``, of an update). Never run: schedule_clean checks it."""

    run_now_if_past = serializers.BooleanField(
        required=False, help_text="For a once trigger in the past: run it now instead of refusing it."
    )
    delay_seconds = serializers.IntegerField(
        required=False, min_value=0, help_text="Shorthand for a once trigger this many seconds from now."
    )

    class Meta:
        model = Schedule
        fields = [*FIELDS, "run_now_if_past", "delay_seconds"]


class ScheduleUpdateSerializer(ScheduleCreateSerializer):
    version = serializers.IntegerField(
        required=False,
        help_text="The version you read. Required unless an If-Match header carries it; a stale one is a 409.",
    )

    class Meta(ScheduleCreateSerializer.Meta):
        fields = [*FIELDS, "run_now_if_past", "delay_seconds", "version"]


class DisableSerializer(serializers.Serializer[Any]):
    note = serializers.CharField(
        required=False, allow_blank=True, max_length=500, default="", help_text="Why it is paused."
    )


class BackfillSerializer(serializers.Serializer[Any]):
    """``from`` and ``to`` bound the slots to create, [from, to); ``dry_run`` only counts them."""

    dry_run = serializers.BooleanField(required=False, default=False)

    def get_fields(self) -> dict[str, serializers.Field]:
        # "from" is a Python keyword, so it cannot be a class attribute.
        return {
            "from": InstantField(help_text="The first instant of the range (inclusive), with a UTC offset."),
            "to": InstantField(help_text="The end of the range (exclusive), in the past, with a UTC offset."),
            **super().get_fields(),
        }


class BackfillResultSerializer(serializers.Serializer[Any]):
    slots = serializers.IntegerField(help_text="Slots of the trigger in [from, to).")
    created = serializers.IntegerField(help_text="New runs (0 on a dry run).")
    existing = serializers.IntegerField(help_text="Slots that already had a run and were left alone.")
    first_slot = serializers.DateTimeField(allow_null=True)
    last_slot = serializers.DateTimeField(allow_null=True)
    run_ids = serializers.ListField(child=serializers.IntegerField())
    dry_run = serializers.BooleanField()


class PreviewSerializer(serializers.Serializer[Any]):
    """An unsaved trigger; checked by schedules.triggers.trigger_validate, like the preview command's."""

    trigger_kind = documented_enum(TriggerKind.choices)
    cron = serializers.CharField(required=False, allow_blank=True, default="", trim_whitespace=False)
    interval_seconds = serializers.IntegerField(required=False, allow_null=True, default=None)
    run_at = InstantField(required=False, allow_null=True, default=None)
    timezone = serializers.CharField(required=False, default="UTC", trim_whitespace=False)
    start_at = InstantField(required=False, allow_null=True, default=None)
    end_at = InstantField(required=False, allow_null=True, default=None)
    after = InstantField(required=False, allow_null=True, default=None, help_text="List slots after this (now).")
    count = serializers.IntegerField(required=False, default=5, min_value=1, max_value=MAX_COUNT)


class PreviewResultSerializer(serializers.Serializer[Any]):
    timezone = serializers.CharField()
    description = serializers.CharField()
    slots = serializers.ListField(
        child=serializers.CharField(), help_text="ISO-8601 instants in the trigger's time zone, with their offsets."
    )
