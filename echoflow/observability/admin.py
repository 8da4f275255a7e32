"""Admin for alerts (acknowledge), per-schedule alert rules, webhook subscriptions and their delivery log.

Rollups, streaks, deliveries and the cursor are written by the event processor only; the admin shows them.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from echoflow.observability.models import (
    Alert,
    AlertEmail,
    EventCursor,
    FailureStreak,
    MetricRollup,
    ScheduleAlertRule,
    WebhookDelivery,
    WebhookSubscription,
)
from echoflow.observability.services import AlertStateError, alert_acknowledge, webhook_delivery_retry


class ReadOnly:
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Alert)
class AlertAdmin(ReadOnly, admin.ModelAdmin[Alert]):
    list_display = ["id", "title", "rule", "status_label", "organization", "schedule", "raised_at", "resolved_at"]
    list_filter = ["rule", ("resolved_at", admin.EmptyFieldListFilter), ("acknowledged_at", admin.EmptyFieldListFilter)]
    list_select_related = ["organization", "schedule"]
    search_fields = ["title", "key"]
    readonly_fields = [f.name for f in Alert._meta.fields]
    actions = ["acknowledge"]

    @admin.display(description="status")
    def status_label(self, obj: Alert) -> str:
        return obj.status

    def has_acknowledge_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("observability.change_alert")

    @admin.action(description="Acknowledge selected alerts", permissions=["acknowledge"])
    def acknowledge(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        done = 0
        for alert in queryset.order_by("pk"):
            try:
                alert_acknowledge(alert=alert, user=request.user)
                done += 1
            except AlertStateError as exc:
                self.message_user(request, f"Not acknowledged: {exc}.", messages.WARNING)
        if done:
            self.message_user(request, f"Acknowledged {done} alert(s).", messages.SUCCESS)


@admin.register(ScheduleAlertRule)
class ScheduleAlertRuleAdmin(admin.ModelAdmin[ScheduleAlertRule]):
    list_display = ["schedule", "consecutive_failures", "enabled", "updated_at"]
    list_filter = ["enabled"]
    list_select_related = ["schedule"]
    autocomplete_fields = ["schedule"]
    search_fields = ["schedule__name"]


@admin.register(FailureStreak)
class FailureStreakAdmin(ReadOnly, admin.ModelAdmin[FailureStreak]):
    list_display = ["schedule_id", "organization_id", "failures", "last_run_id", "updated_at"]
    readonly_fields = [f.name for f in FailureStreak._meta.fields]


@admin.register(WebhookSubscription)
class WebhookSubscriptionAdmin(admin.ModelAdmin[WebhookSubscription]):
    list_display = ["name", "organization", "url", "event_types", "is_active", "created_at"]
    list_filter = ["is_active", "organization"]
    search_fields = ["name", "url"]
    readonly_fields = ["created_at", "updated_at"]
    fields = ["organization", "name", "url", "event_types", "secret", "is_active", "created_at", "updated_at"]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnly, admin.ModelAdmin[WebhookDelivery]):
    list_display = [
        "id",
        "subscription",
        "event_type",
        "status",
        "attempts",
        "last_status_code",
        "short_error",
        "next_attempt_at",
        "delivered_at",
        "created_at",
    ]
    list_filter = ["status", "event_type", "subscription__organization"]
    list_select_related = ["subscription"]
    search_fields = ["event_id", "subscription__name", "subscription__url"]
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]
    show_full_result_count = False
    actions = ["retry_now"]

    @admin.display(description="last error")
    def short_error(self, obj: WebhookDelivery) -> str:
        return obj.last_error[:120]

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("observability.change_webhooksubscription")

    @admin.action(description="Send selected deliveries again now", permissions=["retry"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        done = sum(webhook_delivery_retry(delivery=d) for d in queryset)
        self.message_user(request, f"{done} delivery(ies) will be sent again at the next pass.", messages.SUCCESS)


@admin.register(AlertEmail)
class AlertEmailAdmin(ReadOnly, admin.ModelAdmin[AlertEmail]):
    list_display = ["id", "alert", "event_type", "status", "attempts", "last_error", "sent_at", "created_at"]
    list_filter = ["status", "event_type"]
    readonly_fields = [f.name for f in AlertEmail._meta.fields]


@admin.register(MetricRollup)
class MetricRollupAdmin(ReadOnly, admin.ModelAdmin[MetricRollup]):
    list_display = [
        "resolution",
        "start",
        "organization_id",
        "schedule_id",
        "triggers",
        "succeeded",
        "failed",
        "timed_out",
        "cancelled",
        "skipped",
    ]
    list_filter = ["resolution"]
    readonly_fields = [f.name for f in MetricRollup._meta.fields]
    show_full_result_count = False


@admin.register(EventCursor)
class EventCursorAdmin(ReadOnly, admin.ModelAdmin[EventCursor]):
    list_display = ["name", "position", "processed", "updated_at"]
    readonly_fields = [f.name for f in EventCursor._meta.fields]
