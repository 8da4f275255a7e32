"""Celery tasks of observability: thin wrappers around one service each, routed to ``echoflow.system``."""

from __future__ import annotations

from dataclasses import asdict

from celery import shared_task

from echoflow.observability.delivery import deliveries_send_due
from echoflow.observability.maintenance import observability_prune
from echoflow.observability.processor import events_process
from echoflow.observability.services import dispatcher_alert_check


@shared_task(name="echoflow.system.process_events", ignore_result=True)
def process_events() -> dict[str, int]:
    """Read new outbox events (rollups, failure alerts, deliveries to queue), then send due deliveries."""
    processed = events_process()
    sent = deliveries_send_due()
    return {**asdict(processed), "webhooks_sent": sent.webhooks, "emails_sent": sent.emails}


@shared_task(name="echoflow.system.check_alerts", ignore_result=True)
def check_alerts() -> str | None:
    return dispatcher_alert_check()


@shared_task(name="echoflow.system.prune_observability", ignore_result=True)
def prune_observability() -> dict[str, int]:
    return observability_prune()
