"""The transactional outbox: events are written with the state change and relayed to Redis afterwards."""

from __future__ import annotations

import uuid

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
        return {
            "id": str(self.event_id),
            "type": self.type,
            "occurred_at": self.occurred_at.isoformat(),
            "org": self.organization_id,
            "schedule": self.schedule_id,
            "run": self.run_id,
            "attempt": self.attempt,
            "data": self.data,
        }


class RelayLock(models.Model):
    """One row; the relay holds its lock so that events leave in one order even with many relayers."""

    name = models.CharField(max_length=32, unique=True)

    def __str__(self) -> str:
        return self.name
