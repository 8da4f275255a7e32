"""Keeping the observability tables small: old rollup rows and finished deliveries are deleted."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from echoflow.observability.models import AlertEmail, DeliveryStatus, MetricRollup, Resolution, WebhookDelivery

# Minute rows serve windows up to 48 h (and a week for a closer look); hour rows windows up to 31 days.
KEEP_MINUTE_ROWS = timedelta(days=8)
KEEP_HOUR_ROWS = timedelta(days=35)
KEEP_FINISHED_DELIVERIES = timedelta(days=30)


def observability_prune(*, now: datetime | None = None) -> dict[str, int]:
    """Delete minute rollups older than 8 days, hour rollups older than 35 days, and webhook deliveries and alert
    emails finished more than 30 days ago. All-time rows (the Prometheus counters) are never deleted."""
    now = now or timezone.now()
    minutes, _ = MetricRollup.objects.filter(resolution=Resolution.MINUTE, start__lt=now - KEEP_MINUTE_ROWS).delete()
    hours, _ = MetricRollup.objects.filter(resolution=Resolution.HOUR, start__lt=now - KEEP_HOUR_ROWS).delete()
    finished = [DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED]
    deliveries, _ = WebhookDelivery.objects.filter(
        status__in=finished, created_at__lt=now - KEEP_FINISHED_DELIVERIES
    ).delete()
    emails, _ = AlertEmail.objects.filter(status__in=finished, created_at__lt=now - KEEP_FINISHED_DELIVERIES).delete()
    return {"minute_rows": minutes, "hour_rows": hours, "webhook_deliveries": deliveries, "alert_emails": emails}
