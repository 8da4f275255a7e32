"""Admin for alerts (acknowledge), per-schedule alert rules, webhook subscriptions and their delivery log, and
the observability pieces of the schedule's own page (its 24 h figures, its alert rule inline).

Rollups, streaks, deliveries and the cursor are written by the event processor only; the admin shows them. Alert
rules are written through ``services.schedule_alert_rule_set``, which audits them.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from echoflow.observability.models import (
    Alert,
    AlertEmail,
    EventCursor,
    FailureStreak,
    MetricRollup,
    ScheduleAlertRule,
    WebhookDelivery,
    WebhookSubscription,
    default_failure_threshold,
)
from echoflow.observability.selectors import alerts_with_status, schedule_metrics_summary
from echoflow.observability.services import (
    AlertStateError,
    alert_acknowledge,
    schedule_alert_rule_set,
    webhook_delivery_retry,
)
from schedules.models import Schedule


class ReadOnly:
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class AlertStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("open", "Open (not acknowledged)"),
            ("acknowledged", "Acknowledged"),
            ("active", "Open or acknowledged"),
            ("resolved", "Resolved"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Alert]) -> QuerySet[Alert]:
        return alerts_with_status(queryset, self.value())


@admin.register(Alert)
class AlertAdmin(ReadOnly, admin.ModelAdmin[Alert]):
    list_display = [
        "id",
        "title",
        "rule",
        "status_label",
        "organization",
        "schedule",
        "raised_at",
        "acknowledged_by",
        "resolved_at",
    ]
    list_filter = [AlertStatusFilter, "rule", "organization"]
    list_select_related = ["organization", "schedule", "acknowledged_by"]
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


class ScheduleAlertRuleForm(forms.ModelForm[ScheduleAlertRule]):
    consecutive_failures = forms.IntegerField(
        min_value=1,
        initial=default_failure_threshold,  # as the model's default: an untouched empty inline form is unchanged
        label="Alert after failed runs in a row",
    )

    class Meta:
        model = ScheduleAlertRule
        fields = ["consecutive_failures", "enabled"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["consecutive_failures"].help_text = (
            "Raise an alert when this many runs in a row fail or time out "
            f"(default {settings.ALERT_CONSECUTIVE_FAILURES}, ALERT_CONSECUTIVE_FAILURES)."
        )


class ScheduleAlertRuleFormSet(BaseInlineFormSet[ScheduleAlertRule, Schedule, forms.ModelForm[ScheduleAlertRule]]):
    """Saves through schedule_alert_rule_set (audited), never with the form's own save()."""

    def _set(self, form: forms.ModelForm[ScheduleAlertRule]) -> ScheduleAlertRule:
        return schedule_alert_rule_set(
            schedule=self.instance,
            consecutive_failures=form.cleaned_data["consecutive_failures"],
            enabled=form.cleaned_data["enabled"],
        )

    def save_new(self, form: forms.ModelForm[ScheduleAlertRule], commit: bool = True) -> ScheduleAlertRule:
        return self._set(form)

    def save_existing(
        self, form: forms.ModelForm[ScheduleAlertRule], obj: ScheduleAlertRule, commit: bool = True
    ) -> ScheduleAlertRule:
        return self._set(form)


class ScheduleAlertRuleInline(admin.StackedInline[ScheduleAlertRule, Schedule]):
    """The schedule's threshold for the consecutive-failures alert, on the schedule's page. Left untouched, no row is
    written and the schedule follows ALERT_CONSECUTIVE_FAILURES."""

    model = ScheduleAlertRule
    form = ScheduleAlertRuleForm
    formset = ScheduleAlertRuleFormSet
    fields = ["consecutive_failures", "enabled"]
    extra = 1
    max_num = 1
    can_delete = False
    verbose_name = "alert rule"
    verbose_name_plural = "Alert rule"


def schedule_figures_html(schedule: Schedule) -> SafeString:
    """The schedule's figures over the last 24 hours (selectors.schedule_metrics_summary), as a small table."""
    summary = schedule_metrics_summary(schedule=schedule)
    counts = summary.counts
    return format_html(
        '<table class="echoflow-figures">{}</table><div class="help">{} succeeded, {} failed, {} timed out, '
        "{} cancelled, {} skipped since {} UTC; counted from the run events, a few seconds behind the runs.</div>",
        format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", summary.display()),
        counts.succeeded,
        counts.failed,
        counts.timed_out,
        counts.cancelled,
        counts.skipped,
        f"{summary.since:%Y-%m-%d %H:%M}",
    )


@admin.register(ScheduleAlertRule)
class ScheduleAlertRuleAdmin(admin.ModelAdmin[ScheduleAlertRule]):
    form = ScheduleAlertRuleForm
    list_display = ["schedule", "consecutive_failures", "enabled", "updated_at"]
    list_filter = ["enabled"]
    list_select_related = ["schedule"]
    autocomplete_fields = ["schedule"]
    search_fields = ["schedule__name"]
    fields = ["schedule", "consecutive_failures", "enabled"]

    def get_readonly_fields(self, request: HttpRequest, obj: ScheduleAlertRule | None = None) -> list[str]:
        return ["schedule"] if obj is not None else []

    def save_model(self, request: HttpRequest, obj: ScheduleAlertRule, form: Any, change: bool) -> None:
        saved = schedule_alert_rule_set(
            schedule=obj.schedule, consecutive_failures=obj.consecutive_failures, enabled=obj.enabled
        )
        obj.pk = saved.pk


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
