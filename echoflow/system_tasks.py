"""EchoFlow's own periodic tasks, declared in code and installed into django-celery-beat idempotently.

User schedules are not PeriodicTask rows (one row per schedule is what makes beat slow at scale); beat only
drives these few system tasks. Existing rows are left as an operator tuned them in the admin.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask


@dataclass(frozen=True)
class SystemTask:
    name: str
    task: str
    every_seconds: int
    expires_seconds: int
    description: str


SYSTEM_TASKS = (
    SystemTask(
        "echoflow: dispatch",
        "echoflow.system.dispatch",
        1,
        5,
        "Claims due schedules, writes their runs, sends queued runs to workers, re-queues due retries.",
    ),
    SystemTask("echoflow: relay events", "echoflow.system.relay_events", 2, 10, "Relays the event outbox to Redis."),
    SystemTask("echoflow: reap lost runs", "echoflow.system.reap", 15, 30, "Retries or fails runs whose worker died."),
    SystemTask(
        "echoflow: process events",
        "echoflow.system.process_events",
        2,
        10,
        "Reads new outbox events into metric rollups, failure alerts, webhook deliveries and alert emails, "
        "then sends the due deliveries.",
    ),
    SystemTask(
        "echoflow: check alerts",
        "echoflow.system.check_alerts",
        10,
        20,
        "Raises the dispatcher-stalled alert when the heartbeat is stale, resolves it when it is back.",
    ),
    SystemTask(
        "echoflow: prune observability",
        "echoflow.system.prune_observability",
        3600,
        600,
        "Deletes old minute/hour metric rollups and finished webhook deliveries and alert emails.",
    ),
)


@transaction.atomic
def system_tasks_install() -> list[str]:
    """Create missing system tasks; returns the names created."""
    created = []
    for spec in SYSTEM_TASKS:
        interval, _ = IntervalSchedule.objects.get_or_create(every=spec.every_seconds, period=IntervalSchedule.SECONDS)
        _, was_created = PeriodicTask.objects.get_or_create(
            name=spec.name,
            defaults={
                "task": spec.task,
                "interval": interval,
                "queue": "echoflow.system",
                "expire_seconds": spec.expires_seconds,
                "description": spec.description,
                "enabled": True,
            },
        )
        if was_created:
            created.append(spec.name)
    return created
