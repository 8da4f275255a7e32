"""A Run is one occurrence of a schedule (or one ad-hoc execution); a RunAttempt is one try of it."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q

from echoflow.accounts.models import Organization
from schedules.models import ActionKind, Schedule, default_backoff


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    WAITING = "waiting", "Waiting"
    RUNNING = "running", "Running"
    RETRYING = "retrying", "Retrying"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    TIMED_OUT = "timed_out", "Timed out"
    CANCELLED = "cancelled", "Cancelled"
    SKIPPED = "skipped", "Skipped"


FINAL_STATUSES = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELLED, RunStatus.SKIPPED}
)


class RunTrigger(models.TextChoices):
    SCHEDULE = "schedule", "Schedule"
    MANUAL = "manual", "Manual"
    BACKFILL = "backfill", "Backfill"
    API = "api", "API"
    CATCHUP = "catchup", "Catch-up"


class AttemptOutcome(models.TextChoices):
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    TIMED_OUT = "timed_out", "Timed out"
    CANCELLED = "cancelled", "Cancelled"
    LOST = "lost", "Lost (worker died)"
    INTERRUPTED = "interrupted", "Interrupted (worker shut down)"


class Run(models.Model):
    # No single-column indexes on the two foreign keys: run_org_created_idx and run_schedule_created_idx start with
    # them and serve every lookup by organization or schedule; the extra two cost every insert and status change.
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="runs", db_index=False)
    schedule = models.ForeignKey(
        Schedule, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs", db_index=False
    )
    idempotency_key = models.CharField(max_length=200)
    # The schedule's agent when the run was made (a copy, so that the API filters runs by agent through an index
    # of this table instead of joining every candidate run to its schedule); "" for a run with no schedule. The
    # database default lets code that predates the column (a worker of the previous release) still insert runs.
    agent = models.CharField(max_length=100, blank=True, default="", db_default="")
    trigger = models.CharField(max_length=16, choices=RunTrigger.choices, default=RunTrigger.SCHEDULE)
    slot = models.DateTimeField(null=True, blank=True, help_text="The instant this run was planned for.")
    due_at = models.DateTimeField(help_text="Slot plus jitter: when it may start.")
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    status_reason = models.CharField(max_length=500, blank=True)
    # For a waiting run: which limit it waits for ("schedule" overlap or "organization"), so the org's line only
    # counts runs that wait for the org.
    waiting_for = models.CharField(max_length=16, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=3)
    backoff_seconds = models.JSONField(default=default_backoff)
    timeout_seconds = models.PositiveIntegerField(default=300)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    priority = models.PositiveSmallIntegerField(default=5)
    round_index = models.PositiveIntegerField(null=True, blank=True)

    action_kind = models.CharField(max_length=16, choices=ActionKind.choices)
    action_name = models.CharField(max_length=200, blank=True)
    action_config = models.JSONField(default=dict, blank=True)
    payload = models.JSONField(default=dict, blank=True)

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    # Messages sent for the current attempt, and when a still-unstarted run counts as lost and is sent again:
    # the wait doubles with each send, so a long queue is not flooded with copies of runs that merely wait in it.
    sends = models.PositiveIntegerField(default=0)
    resend_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # An event run that waits for an external executor's report (POST /api/v1/runs/{id}/report) until then;
    # the reaper times the attempt out afterwards instead of treating the silence as a dead worker.
    report_by = models.DateTimeField(null=True, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    worker = models.CharField(max_length=200, blank=True)
    trace_id = models.CharField(max_length=32, default="", blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["idempotency_key"], name="run_idempotency_key_unique"),
            models.CheckConstraint(condition=Q(status__in=RunStatus.values), name="run_status_valid"),
            models.CheckConstraint(condition=Q(trigger__in=RunTrigger.values), name="run_trigger_valid"),
            models.CheckConstraint(condition=Q(max_attempts__gte=1), name="run_max_attempts_positive"),
        ]
        indexes = [
            models.Index(fields=["schedule", "-created_at"], name="run_schedule_created_idx"),
            models.Index(fields=["status"], name="run_status_idx"),
            # Serves the dispatcher: queued runs not yet sent whose due time has come.
            models.Index(
                fields=["due_at"],
                condition=Q(status="queued", enqueued_at__isnull=True),
                name="run_to_enqueue_idx",
            ),
            # Serves the dispatcher: queued runs sent long ago and never started (lost messages).
            models.Index(fields=["resend_at"], condition=Q(status="queued"), name="run_resend_due_idx"),
            # Serves the dispatcher: retries whose backoff has elapsed.
            models.Index(fields=["next_attempt_at"], condition=Q(status="retrying"), name="run_retry_due_idx"),
            models.Index(fields=["organization", "-created_at"], name="run_org_created_idx"),
            # Serves the run list filtered by agent (GET /api/v1/runs/?agent=), newest first; runs without an
            # agent are left out of it.
            models.Index(
                fields=["organization", "agent", "-created_at"],
                condition=~Q(agent=""),
                name="run_org_agent_created_idx",
            ),
            # Serves admission: an organization's running runs (its limit) and waiting runs (who is ahead). Small,
            # whatever the size of the table; without it the count read the organization's whole history.
            models.Index(
                fields=["organization", "status"],
                condition=Q(status__in=["running", "waiting"]),
                name="run_org_active_idx",
            ),
            # Serves admission by overlap policy: a schedule's running runs, and its waiting or queued ones (who
            # is ahead of a buffered run); without it the count read the schedule's whole history.
            models.Index(
                fields=["schedule", "status"],
                condition=Q(status__in=["queued", "waiting", "running"]),
                name="run_schedule_active_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @staticmethod
    def new_trace_id() -> str:
        return uuid.uuid4().hex


class RunAttempt(models.Model):
    # attempt_unique_number_per_run (run, number) serves lookups by run.
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="attempt_log", db_index=False)
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=AttemptOutcome.choices, default=AttemptOutcome.RUNNING)
    error = models.TextField(blank=True)
    output = models.JSONField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["run", "number"]
        constraints = [
            models.UniqueConstraint(fields=["run", "number"], name="attempt_unique_number_per_run"),
            models.CheckConstraint(condition=Q(outcome__in=AttemptOutcome.values), name="attempt_outcome_valid"),
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of run {self.run_id}: {self.outcome}"


class DispatcherHeartbeat(models.Model):
    """Written by every dispatch tick; ``check_scheduler`` and /healthz read its age."""

    name = models.CharField(max_length=64, unique=True)
    beat_at = models.DateTimeField()
    hostname = models.CharField(max_length=200, blank=True)
    last_tick_ms = models.PositiveIntegerField(default=0)
    last_created = models.PositiveIntegerField(default=0)
    last_enqueued = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name} at {self.beat_at.isoformat()}"
