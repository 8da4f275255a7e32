"""Runs and their attempts on the wire. Input serializers carry types; runs.services and runs.report check rules."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from echoflow.api.serializers.fast import FastRepresentation
from echoflow.api.serializers.fields import documented_enum
from runs.models import Run, RunAttempt, RunStatus
from runs.report import REPORT_STATUSES
from schedules.models import ActionKind

RUN_FIELDS = [
    "id",
    "schedule",
    "schedule_name",
    "agent",
    "trigger",
    "slot",
    "due_at",
    "status",
    "status_reason",
    "attempts",
    "max_attempts",
    "timeout_seconds",
    "next_attempt_at",
    "priority",
    "round_index",
    "action_kind",
    "action_name",
    "action_config",
    "payload",
    "created_at",
    "enqueued_at",
    "started_at",
    "finished_at",
    "output",
    "error",
    "worker",
    "trace_id",
]


class RunSerializer(FastRepresentation, serializers.ModelSerializer[Run]):
    schedule_name = serializers.SerializerMethodField()

    class Meta:
        model = Run
        fields = RUN_FIELDS
        read_only_fields = fields

    def get_schedule_name(self, run: Run) -> str | None:
        if hasattr(run, "schedule_name"):  # annotated by runs.selectors.run_list
            name: str | None = getattr(run, "schedule_name")  # noqa: B009 (not a model field: mypy)
            return name
        return run.schedule.name if run.schedule_id and run.schedule is not None else None


class RunAttemptSerializer(FastRepresentation, serializers.ModelSerializer[RunAttempt]):
    class Meta:
        model = RunAttempt
        fields = ["number", "started_at", "finished_at", "outcome", "error", "output", "worker", "duration_ms"]
        read_only_fields = fields


class RunDetailSerializer(RunSerializer):
    attempt_log = RunAttemptSerializer(many=True, read_only=True, help_text="One entry per attempt, oldest first.")

    class Meta(RunSerializer.Meta):
        fields = [*RUN_FIELDS, "attempt_log"]
        read_only_fields = fields


class RunCreateSerializer(serializers.Serializer[Any]):
    """An ad-hoc run: do this once, now, with no schedule."""

    action_kind = documented_enum(ActionKind.choices)
    action_name = serializers.CharField(required=False, allow_blank=True, default="", max_length=200)
    action_config = serializers.DictField(required=False, default=dict)
    payload = serializers.JSONField(required=False, allow_null=True, default=None)
    max_attempts = serializers.IntegerField(required=False, default=1)
    timeout_seconds = serializers.IntegerField(required=False, default=300)
    priority = serializers.IntegerField(required=False, default=5)


class CancelSerializer(serializers.Serializer[Any]):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=500, default="cancelled by hand")


class ReportSerializer(serializers.Serializer[Any]):
    """An external executor's outcome of a running event run."""

    status = documented_enum([(value, RunStatus(value).label) for value in REPORT_STATUSES], inline=True)
    output = serializers.JSONField(required=False, allow_null=True, default=None)
    error = serializers.CharField(required=False, allow_blank=True, default="", trim_whitespace=False)
