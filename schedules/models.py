"""A Schedule is the rule ("every weekday at 08:00 in Asia/Shanghai, send the report"); runs are its history."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from echoflow.accounts.models import Organization
from schedules.triggers import Trigger, TriggerKind, trigger_of

DEFAULT_BACKOFF = [30, 60, 300, 900, 3600]


def default_backoff() -> list[int]:
    return list(DEFAULT_BACKOFF)


class ScheduleState(models.TextChoices):
    ACTIVE = "active", "Active"
    PAUSED = "paused", "Paused"
    COMPLETED = "completed", "Completed"
    CANCELLED = "cancelled", "Cancelled"


class MisfirePolicy(models.TextChoices):
    COALESCE = "coalesce", "Coalesce: one run for the latest missed slot"
    ALL = "all", "All: every missed slot in the catch-up window"
    SKIP = "skip", "Skip: wait for the next future slot"


class OverlapPolicy(models.TextChoices):
    SKIP = "skip", "Skip the new run"
    BUFFER_ONE = "buffer_one", "Buffer one"
    BUFFER_ALL = "buffer_all", "Buffer all"
    CANCEL_OTHER = "cancel_other", "Cancel the oldest running run"
    ALLOW_ALL = "allow_all", "Allow all"


class ActionKind(models.TextChoices):
    PYTHON = "python", "Python callable"
    HTTP = "http", "HTTP request"
    EVENT = "event", "Event on the bus"
    CELERY = "celery", "Celery task of another app"


class Schedule(models.Model):
    # Not indexed on its own: schedule_name_unique_in_org (organization, name) leads with it (schedules.0004).
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="schedules", db_index=False)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, max_length=4000)
    # Indexed by schedule_org_agent_name_idx (with the organization, in the list's name order), not on its own.
    agent = models.CharField(max_length=100, blank=True, help_text="Name of the execution target.")
    labels = models.JSONField(default=dict, blank=True)

    trigger_kind = models.CharField(max_length=16, choices=TriggerKind.choices)
    cron = models.CharField(max_length=200, blank=True)
    interval_seconds = models.PositiveIntegerField(null=True, blank=True)
    run_at = models.DateTimeField(null=True, blank=True)
    timezone = models.CharField(max_length=64, default="UTC")
    start_at = models.DateTimeField(null=True, blank=True)
    end_at = models.DateTimeField(null=True, blank=True)
    max_runs = models.PositiveIntegerField(null=True, blank=True)

    catchup_window_seconds = models.PositiveIntegerField(default=3600)
    misfire_policy = models.CharField(max_length=16, choices=MisfirePolicy.choices, default=MisfirePolicy.COALESCE)
    jitter_seconds = models.PositiveIntegerField(default=0)
    max_concurrency = models.PositiveIntegerField(default=1)
    overlap_policy = models.CharField(max_length=16, choices=OverlapPolicy.choices, default=OverlapPolicy.SKIP)

    max_attempts = models.PositiveIntegerField(default=3)
    backoff_seconds = models.JSONField(default=default_backoff)
    timeout_seconds = models.PositiveIntegerField(default=300)
    priority = models.PositiveSmallIntegerField(default=5, help_text="0 (lowest) to 9 (highest).")
    pause_after_failures = models.PositiveIntegerField(null=True, blank=True)

    action_kind = models.CharField(max_length=16, choices=ActionKind.choices, default=ActionKind.PYTHON)
    action_name = models.CharField(max_length=200, blank=True, help_text="Registered callable or task name.")
    action_config = models.JSONField(default=dict, blank=True)
    payload = models.JSONField(default=dict, blank=True)

    state = models.CharField(max_length=16, choices=ScheduleState.choices, default=ScheduleState.ACTIVE)
    state_note = models.CharField(max_length=500, blank=True)
    next_run_at = models.DateTimeField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_run_status = models.CharField(max_length=16, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    runs_count = models.PositiveIntegerField(default=0)
    missed_count = models.PositiveIntegerField(default=0)
    skipped_count = models.PositiveIntegerField(default=0)
    version = models.PositiveIntegerField(default=1)

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="schedule_name_unique_in_org"),
            models.CheckConstraint(
                condition=Q(trigger_kind__in=TriggerKind.values), name="schedule_trigger_kind_valid"
            ),
            models.CheckConstraint(condition=Q(state__in=ScheduleState.values), name="schedule_state_valid"),
            models.CheckConstraint(
                condition=Q(misfire_policy__in=MisfirePolicy.values), name="schedule_misfire_policy_valid"
            ),
            models.CheckConstraint(
                condition=Q(overlap_policy__in=OverlapPolicy.values), name="schedule_overlap_policy_valid"
            ),
            models.CheckConstraint(condition=Q(action_kind__in=ActionKind.values), name="schedule_action_kind_valid"),
            models.CheckConstraint(
                condition=~Q(trigger_kind=TriggerKind.CRON) | ~Q(cron=""), name="schedule_cron_has_expression"
            ),
            models.CheckConstraint(
                condition=~Q(trigger_kind=TriggerKind.INTERVAL) | Q(interval_seconds__gt=0),
                name="schedule_interval_has_seconds",
            ),
            models.CheckConstraint(
                condition=~Q(trigger_kind=TriggerKind.ONCE) | Q(run_at__isnull=False),
                name="schedule_once_has_run_at",
            ),
            models.CheckConstraint(
                condition=Q(end_at__isnull=True) | Q(start_at__isnull=True) | Q(end_at__gt=models.F("start_at")),
                name="schedule_end_after_start",
            ),
            models.CheckConstraint(
                condition=Q(max_runs__isnull=True) | Q(max_runs__gte=1), name="schedule_max_runs_positive"
            ),
            models.CheckConstraint(condition=Q(max_attempts__gte=1), name="schedule_max_attempts_positive"),
            models.CheckConstraint(condition=Q(priority__lte=9), name="schedule_priority_0_9"),
            models.CheckConstraint(condition=Q(max_concurrency__gte=1), name="schedule_max_concurrency_positive"),
        ]
        indexes = [
            # Serves the dispatcher's claim: WHERE state = 'active' AND next_run_at <= now ORDER BY next_run_at.
            models.Index(fields=["next_run_at"], condition=Q(state="active"), name="schedule_due_idx"),
            models.Index(fields=["organization", "state"], name="schedule_org_state_idx"),
            # Serve the API list's ?ordering=(-)created_at and (-)updated_at: a page without sorting the org's rows.
            models.Index(fields=["organization", "created_at"], name="schedule_org_created_idx"),
            models.Index(fields=["organization", "updated_at"], name="schedule_org_updated_idx"),
            # Serves the list filtered by agent (?agent=, alone or with state and kind) in its name order, the web
            # table's sort by agent, and the distinct agents of an organization.
            models.Index(fields=["organization", "agent", "name"], name="schedule_org_agent_name_idx"),
            # On PostgreSQL, migration 0002 also makes two GIN indexes for the API list: schedule_text_trgm_idx
            # (trigrams, for ?q=, UPPER(name|description|agent) LIKE '%…%') and schedule_labels_gin_idx (for
            # ?label=). They are not declared here: SQLite (the embedded install) has no GIN indexes and would fail
            # to re-create them whenever it rebuilds this table.
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def trigger(self) -> Trigger:
        return trigger_of(self)
