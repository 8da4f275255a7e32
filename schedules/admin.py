"""Admin for schedules. Every write goes through schedules.services / runs.services; this module only maps
forms and buttons onto them."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, ClassVar, cast
from zoneinfo import ZoneInfo

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import InlineModelAdmin
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from echoflow.observability.admin import ScheduleAlertRuleInline, schedule_figures_html
from runs.models import Run
from runs.selectors import runs_of_schedule
from runs.services import schedule_run_now
from schedules.models import Schedule, ScheduleState
from schedules.selectors import schedule_upcoming
from schedules.services import (
    VersionConflict,
    schedule_create,
    schedule_delete,
    schedule_pause,
    schedule_resume,
    schedule_update,
)
from schedules.validation import FIELDS, schedule_clean

PREVIEW_COUNT = 5
RECENT_RUNS = 20
ERROR_EXCERPT_CHARS = 120

TRIGGER_FORM_FIELDS = [
    "trigger_kind",
    "cron",
    "interval_seconds",
    "run_at",
    "timezone",
    "start_at",
    "end_at",
    "max_runs",
]
RECENT_RUN_COLUMNS = (
    "run_link",
    "status",
    "trigger",
    "slot",
    "started_at",
    "finished_at",
    "attempts",
    "error_excerpt",
)
COUNTERS = [
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
    "created_by",
    "created_at",
    "updated_at",
]

# Errors keyed by form field (None: the whole form).
FormErrors = dict[str | None, list[str]]

# Set on the request when the service refused a form that had validated; see ScheduleAdmin.changeform_view.
_REFUSAL_ATTR = "_echoflow_schedule_refusal"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def utc_offset(moment: datetime) -> str:
    """'UTC+08:00' (strftime's %:z needs Python 3.12)."""
    offset = moment.utcoffset() or timedelta(0)
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def format_fire_time(slot: datetime, zone: ZoneInfo) -> str:
    local = slot.astimezone(zone)
    return f"{local:%a %Y-%m-%d %H:%M:%S} ({utc_offset(local)})"


def validation_errors(exc: ValidationError, fields: dict[str, Any]) -> FormErrors:
    """A service's ValidationError as form errors: its keys that name form fields stay on them, others
    become non-field errors that still say which key they are about."""
    if not hasattr(exc, "error_dict"):
        return {None: list(exc.messages)}
    errors: FormErrors = {}
    for key, messages_ in exc.message_dict.items():
        if key in fields:
            errors.setdefault(key, []).extend(messages_)
        else:
            errors.setdefault(None, []).extend(f"{key}: {message}" for message in messages_)
    return errors


class ScheduleSaveRefused(Exception):
    """The service refused, at save time, a form that had validated (the schedule changed in between)."""

    def __init__(self, errors: FormErrors) -> None:
        super().__init__(errors)
        self.errors = errors


class ScheduleAdminForm(forms.ModelForm[Schedule]):
    """Validates with schedules.validation.schedule_clean, the rules every entry point shares.

    ``loaded_version`` carries the version the page was loaded with, so that saving over someone else's change
    is refused (schedule_update's expected_version) instead of silently overwriting it.
    """

    loaded_version = forms.IntegerField(required=False, widget=forms.HiddenInput)
    run_now_if_past = forms.BooleanField(
        required=False,
        label="Run now if the time has passed",
        help_text="For a once trigger whose time is already past: run it right away instead of refusing.",
    )

    # Errors the service raised at save time, shown again on the re-rendered form (see changeform_view).
    refusal: ClassVar[FormErrors] = {}

    class Meta:
        model = Schedule
        fields = ("organization", *FIELDS)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None:
            self.fields["loaded_version"].initial = self.instance.version
        for name in ("run_at", "start_at", "end_at"):
            if name in self.fields:
                self.fields[name].help_text = "In UTC; the trigger's calendar uses the time zone below."

    @property
    def is_update(self) -> bool:
        return self.instance.pk is not None

    def service_data(self) -> dict[str, Any]:
        """What to hand to schedule_create / schedule_update: every field on create, only the changed ones on
        update (a partial update leaves, for example, a past run_at of a once schedule alone)."""
        cleaned = self.cleaned_data
        if self.is_update:
            names = [name for name in self.changed_data if name in FIELDS]
        else:
            names = [name for name in FIELDS if name in self.fields]
        data = {name: cleaned[name] for name in names if name in cleaned}
        if not self.is_update and cleaned.get("run_now_if_past"):
            data["run_now_if_past"] = True
        return data

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.is_update and cleaned.get("loaded_version") is None:
            self.add_error(None, "The form does not say which version of the schedule it edits; reload it.")
        organization = self.instance.organization if self.is_update else cleaned.get("organization")
        if organization is not None:
            already_wrong = set(self.errors)
            data = {k: v for k, v in self.service_data().items() if k not in already_wrong}
            try:
                schedule_clean(
                    data,
                    organization=organization,
                    instance=self.instance if self.is_update else None,
                    now=timezone.now(),
                )
            except ValidationError as exc:
                for key, messages_ in validation_errors(exc, self.fields).items():
                    # A field that failed its own parsing was left out of data: the service's view is noise.
                    if key is None or key not in already_wrong:
                        self.add_error(key, messages_)
        for key, messages_ in self.refusal.items():
            self.add_error(key if key in self.fields else None, messages_)
        return cleaned


class RecentRunInline(admin.TabularInline[Run, Schedule]):
    """The latest runs of the schedule, read-only: runs change through their own actions, never here."""

    model = Run
    fk_name = "schedule"
    verbose_name_plural = f"Recent runs (latest {RECENT_RUNS})"
    fields = RECENT_RUN_COLUMNS
    readonly_fields = RECENT_RUN_COLUMNS
    extra = 0
    max_num = 0
    can_delete = False

    @admin.display(description="run")
    def run_link(self, run: Run) -> SafeString:
        return format_html('<a href="{}">#{}</a>', reverse("admin:runs_run_change", args=[run.pk]), run.pk)

    @admin.display(description="error")
    def error_excerpt(self, run: Run) -> str:
        first_line = run.error.strip().splitlines()[0] if run.error.strip() else ""
        if len(first_line) > ERROR_EXCERPT_CHARS:
            return first_line[: ERROR_EXCERPT_CHARS - 1] + "…"
        return first_line

    def has_add_permission(self, request: HttpRequest, obj: Schedule | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Schedule | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Schedule | None = None) -> bool:
        return False


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin[Schedule]):
    form = ScheduleAdminForm
    list_display = [
        "name",
        "organization",
        "agent",
        "trigger_description",
        "state",
        "next_run_at",
        "last_run_status",
    ]
    list_filter = ["state", "agent", "trigger_kind", "organization"]
    list_select_related = ["organization"]
    search_fields = ["name", "description", "agent"]
    actions = ["enable_schedules", "disable_schedules", "run_schedules_now"]
    inlines = [RecentRunInline]

    def get_fieldsets(self, request: HttpRequest, obj: Schedule | None = None) -> Any:
        editing = obj is not None
        general = ["organization", "name", "description", "agent", "labels"]
        if editing and self.has_change_permission(request, obj):
            general.append("loaded_version")
        trigger = [*TRIGGER_FORM_FIELDS]
        trigger.append("next_fire_times" if editing else "run_now_if_past")
        fieldsets: list[tuple[str | None, dict[str, Any]]] = [
            (None, {"fields": general}),
            ("Trigger", {"fields": trigger}),
            (
                "Misfires, jitter and overlap",
                {
                    "fields": [
                        "catchup_window_seconds",
                        "misfire_policy",
                        "jitter_seconds",
                        "max_concurrency",
                        "overlap_policy",
                    ]
                },
            ),
            (
                "Retries and limits",
                {
                    "fields": [
                        "max_attempts",
                        "backoff_seconds",
                        "timeout_seconds",
                        "priority",
                        "pause_after_failures",
                    ]
                },
            ),
            ("Action", {"fields": ["action_kind", "action_name", "action_config", "payload"]}),
        ]
        if editing:
            fieldsets.append(("State and counters", {"fields": COUNTERS}))
            fieldsets.append(("Last 24 hours", {"fields": ["figures_24h"]}))
        return fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: Schedule | None = None) -> list[str]:
        if obj is None:
            return []
        # The organization is fixed once created: schedule_update does not move schedules between tenants.
        return ["organization", "next_fire_times", *COUNTERS, "figures_24h"]

    def get_inlines(self, request: HttpRequest, obj: Schedule | None) -> list[type[InlineModelAdmin[Any, Any]]]:
        return [ScheduleAlertRuleInline, RecentRunInline] if obj is not None else []

    def get_formset_kwargs(self, request: HttpRequest, obj: Schedule, inline: Any, prefix: str) -> dict[str, Any]:
        kwargs = super().get_formset_kwargs(request, obj, inline, prefix)
        if isinstance(inline, RecentRunInline) and obj.pk is not None:
            # An inline formset filters its queryset by the parent, which a sliced queryset refuses: use ids.
            recent = runs_of_schedule(schedule_id=obj.pk, limit=RECENT_RUNS).values_list("pk", flat=True)
            kwargs["queryset"] = kwargs["queryset"].filter(pk__in=list(recent))
        return kwargs

    # --- computed columns and fields ----------------------------------------------------------------------
    @admin.display(description="trigger", ordering="trigger_kind")
    def trigger_description(self, schedule: Schedule) -> str:
        try:
            return schedule.trigger.describe()
        except (ValueError, KeyError, AssertionError):
            return f"{schedule.trigger_kind} (invalid)"

    @admin.display(description=f"next {PREVIEW_COUNT} fire times")
    def next_fire_times(self, schedule: Schedule) -> SafeString | str:
        try:
            zone = ZoneInfo(schedule.timezone)
            slots = schedule_upcoming(schedule=schedule, count=PREVIEW_COUNT, after=timezone.now())
        except (ValueError, KeyError, AssertionError) as exc:
            return f"cannot compute: {exc}"
        if not slots:
            return "none: the trigger has no future slot"
        note = ""
        if schedule.state != ScheduleState.ACTIVE:
            state = schedule.get_state_display().lower()
            note = f"The schedule is {state}: these slots run only while it is active."
        return format_html(
            '<ol class="echoflow-fire-times">{}</ol><div class="help">In {}. {}</div>',
            format_html_join("", "<li>{}</li>", ((format_fire_time(slot, zone),) for slot in slots)),
            schedule.timezone,
            note,
        )

    @admin.display(description="figures")
    def figures_24h(self, schedule: Schedule) -> SafeString:
        return schedule_figures_html(schedule)

    # --- saving through the services ----------------------------------------------------------------------
    def get_form(
        self, request: HttpRequest, obj: Schedule | None = None, change: bool = False, **kwargs: Any
    ) -> type[forms.ModelForm[Schedule]]:
        form = super().get_form(request, obj, change, **kwargs)
        refusal: FormErrors | None = getattr(request, _REFUSAL_ATTR, None)
        if refusal:
            form = cast(type[forms.ModelForm[Schedule]], type(form.__name__, (form,), {"refusal": refusal}))
        return form

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except ScheduleSaveRefused as refused:
            # The admin's transaction was rolled back by the exception; render the same POST again, this time
            # with the service's reason on the form, so nothing is written and the user keeps their input.
            setattr(request, _REFUSAL_ATTR, refused.errors)
            return super().changeform_view(request, object_id, form_url, extra_context)

    def save_model(self, request: HttpRequest, obj: Schedule, form: ScheduleAdminForm, change: bool) -> None:
        data = form.service_data()
        try:
            if change:
                saved, _ = schedule_update(
                    schedule=obj, data=data, expected_version=form.cleaned_data["loaded_version"]
                )
            else:
                saved = schedule_create(organization=form.cleaned_data["organization"], data=data, user=request.user)
        except VersionConflict as exc:
            raise ScheduleSaveRefused({None: [f"Not saved: {exc}."]}) from exc
        except ValidationError as exc:
            raise ScheduleSaveRefused(validation_errors(exc, form.fields)) from exc
        obj.pk = saved.pk
        obj.refresh_from_db()

    def delete_model(self, request: HttpRequest, obj: Schedule) -> None:
        schedule_delete(schedule=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        for schedule in queryset:
            schedule_delete(schedule=schedule)

    # --- actions ------------------------------------------------------------------------------------------
    @admin.action(description="Enable selected schedules", permissions=["change"])
    def enable_schedules(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        done = sum(schedule_resume(schedule=schedule) for schedule in queryset)
        left = queryset.count() - done
        message = f"Enabled {plural(done, 'schedule')}."
        if left:
            message = f"Enabled {plural(done, 'schedule')}; skipped {plural(left, 'schedule')} not paused."
        self.message_user(request, message, messages.SUCCESS if done else messages.WARNING)

    @admin.action(description="Disable selected schedules", permissions=["change"])
    def disable_schedules(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        note = f"paused in the admin by {request.user}"
        done = sum(schedule_pause(schedule=schedule, note=note) for schedule in queryset)
        left = queryset.count() - done
        message = f"Disabled {plural(done, 'schedule')}."
        if left:
            message = f"Disabled {plural(done, 'schedule')}; skipped {plural(left, 'schedule')} not active."
        self.message_user(request, message, messages.SUCCESS if done else messages.WARNING)

    @admin.action(description="Run selected schedules now", permissions=["change"])
    def run_schedules_now(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        runs = [schedule_run_now(schedule=schedule)[0] for schedule in queryset]
        shown = ", ".join(f"#{run.pk}" for run in runs[:10]) + (", …" if len(runs) > 10 else "")
        self.message_user(
            request,
            f"Queued {plural(len(runs), 'run')} ({shown}); the dispatcher sends them to a worker.",
            messages.SUCCESS,
        )
