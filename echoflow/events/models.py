"""The transactional outbox: events are written with the state change and relayed to Redis afterwards."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.db import models


class OutboxEvent(models.Model):
    event_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # Indexed by outbox_type_idx (the admin's type filter), without the LIKE-pattern twin db_index would add on
    # PostgreSQL: no query searches types by prefix, and every event written paid for it.
    type = models.CharField(max_length=64)
    occurred_at = models.DateTimeField()
    organization_id = models.BigIntegerField(null=True)
    schedule_id = models.BigIntegerField(null=True)
    run_id = models.BigIntegerField(null=True)
    attempt = models.PositiveIntegerField(null=True)
    data = models.JSONField(default=dict)
    relayed_at = models.DateTimeField(null=True, blank=True)
    stream_id = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["type"], name="outbox_type_idx"),
            # Serves the relay's "what is still to send, oldest first" query.
            models.Index(fields=["id"], condition=models.Q(relayed_at__isnull=True), name="outbox_pending_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.type} #{self.pk}"

    def envelope(self) -> dict[str, object]:
        """The stable JSON envelope of DESIGN §6."""
        return event_envelope(
            self.event_id,
            self.type,
            self.occurred_at,
            self.organization_id,
            self.schedule_id,
            self.run_id,
            self.attempt,
            self.data,
        )


# The columns event_envelope takes, in its order (the relay reads them without building model instances).
ENVELOPE_COLUMNS = ("event_id", "type", "occurred_at", "organization_id", "schedule_id", "run_id", "attempt", "data")


def event_envelope(
    event_id: uuid.UUID,
    type: str,
    occurred_at: datetime,
    organization_id: int | None,
    schedule_id: int | None,
    run_id: int | None,
    attempt: int | None,
    data: object,
) -> dict[str, object]:
    """The stable JSON envelope of DESIGN §6, from an outbox row's columns."""
    return {
        "id": str(event_id),
        "type": type,
        "occurred_at": occurred_at.isoformat(),
        "org": organization_id,
        "schedule": schedule_id,
        "run": run_id,
        "attempt": attempt,
        "data": data,
    }


class RelayLock(models.Model):
    """One row; the relay holds its lock so that events leave in one order even with many relayers."""

    name = models.CharField(max_length=32, unique=True)

    def __str__(self) -> str:
        return self.name
