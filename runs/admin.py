"""Admin for runs, their attempts and the dispatcher's heartbeat.

Runs are history written by the dispatcher and the workers: the admin shows them and changes them only through
runs.services (retry, cancel), never by saving a form over a row a worker may be updating at the same moment.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from runs.models import DispatcherHeartbeat, Run, RunAttempt
from runs.services import RunStateError, run_cancel, run_retry


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


ATTEMPT_COLUMNS = ("number", "started_at", "finished_at", "outcome", "duration_ms", "worker", "error")


class ReadOnlyAdminMixin:
    """Shown, never added, edited or deleted from the admin."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class RunAttemptInline(ReadOnlyAdminMixin, admin.TabularInline[RunAttempt, Run]):
    model = RunAttempt
    fields = ATTEMPT_COLUMNS
    readonly_fields = ATTEMPT_COLUMNS
    extra = 0
    max_num = 0
    can_delete = False


@admin.register(Run)
class RunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin[Run]):
    list_display = [
        "id",
        "schedule",
        "organization",
        "status",
        "trigger",
        "slot",
        "due_at",
        "attempts",
        "started_at",
        "finished_at",
    ]
    list_filter = ["status", "trigger", "organization"]
    list_select_related = ["schedule", "organization"]
    search_fields = ["idempotency_key", "schedule__name"]
    # The runs table is the big one: skip the unfiltered COUNT(*) on every page.
    show_full_result_count = False
    actions = ["retry_runs", "cancel_runs"]
    inlines = [RunAttemptInline]
    fieldsets = [
        (None, {"fields": ["organization", "schedule", "agent", "idempotency_key", "trigger", "slot", "due_at"]}),
        (
            "Status",
            {"fields": ["status", "status_reason", "attempts", "max_attempts", "next_attempt_at", "error"]},
        ),
        (
            "Timing",
            {
                "fields": [
                    "created_at",
                    "enqueued_at",
                    "started_at",
                    "finished_at",
                    "heartbeat_at",
                    "worker",
                    "trace_id",
                ]
            },
        ),
        (
            "Action",
            {
                "fields": [
                    "action_kind",
                    "action_name",
                    "action_config",
                    "payload",
                    "backoff_seconds",
                    "timeout_seconds",
                    "priority",
                    "round_index",
                ]
            },
        ),
        ("Output", {"fields": ["output"]}),
    ]
    readonly_fields = [field.name for field in Run._meta.fields]

    # Actions need the change permission, although the change form itself is read-only.
    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.{get_permission_codename('change', self.opts)}")

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return self.has_retry_permission(request)

    @admin.action(description="Retry selected runs", permissions=["retry"])
    def retry_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        done = 0
        for run in queryset.order_by("pk"):
            try:
                run_retry(run=run)
            except RunStateError as exc:
                self.message_user(request, f"Not retried: {exc}.", messages.WARNING)
            else:
                done += 1
        if done:
            self.message_user(
                request,
                f"Retried {plural(done, 'run')}: queued again with a fresh attempt budget.",
                messages.SUCCESS,
            )

    @admin.action(description="Cancel selected runs", permissions=["cancel"])
    def cancel_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        done = 0
        for run in queryset.order_by("pk"):
            try:
                run_cancel(run=run, reason=f"cancelled in the admin by {request.user}")
            except RunStateError as exc:
                self.message_user(request, f"Not cancelled: {exc}.", messages.WARNING)
            else:
                done += 1
        if done:
            self.message_user(request, f"Cancelled {plural(done, 'run')}.", messages.SUCCESS)


@admin.register(RunAttempt)
class RunAttemptAdmin(ReadOnlyAdminMixin, admin.ModelAdmin[RunAttempt]):
    list_display = ["id", "run", "number", "outcome", "started_at", "finished_at", "duration_ms", "worker"]
    list_filter = ["outcome", "run__organization", "started_at"]
    list_select_related = ["run"]
    search_fields = ["run__idempotency_key", "worker"]
    show_full_result_count = False
    readonly_fields = [field.name for field in RunAttempt._meta.fields]


@admin.register(DispatcherHeartbeat)
class DispatcherHeartbeatAdmin(ReadOnlyAdminMixin, admin.ModelAdmin[DispatcherHeartbeat]):
    list_display = ["name", "beat_at", "age", "hostname", "last_tick_ms", "last_created", "last_enqueued"]
    readonly_fields = [field.name for field in DispatcherHeartbeat._meta.fields]

    @admin.display(description="age")
    def age(self, heartbeat: DispatcherHeartbeat) -> str:
        seconds = (timezone.now() - heartbeat.beat_at).total_seconds()
        return f"{seconds:.1f} s ago"
