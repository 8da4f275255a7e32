"""The event processor: reads the outbox after a stored cursor and derives everything observability needs.

For each batch of new events, in one transaction with the cursor row locked (so processors on many machines take
turns and every event is applied exactly once): metric rollups, consecutive-failure alerts, a webhook delivery per
matching subscription, an email per alert event. Sending them is ``delivery``'s job.

Why a cursor with gaps: outbox ids are assigned at INSERT but rows become visible at COMMIT, so a transaction that
took id 100 can commit after one that took 101. A reader that only remembered "101" would never see 100. The
cursor remembers ids it skipped over and looks for them again on every pass until ``GAP_GRACE`` has passed (an id
whose transaction rolled back never appears; no transaction that writes events lasts that long).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from echoflow.events.models import OutboxEvent
from echoflow.observability.models import (
    Alert,
    AlertEmail,
    EventCursor,
    WebhookDelivery,
    WebhookSubscription,
)
from echoflow.observability.rollups import rollups_apply
from echoflow.observability.services import failure_alerts_apply

logger = logging.getLogger(__name__)

CURSOR_NAME = "events"
GAP_GRACE = timedelta(minutes=5)
# A jump of more ids than this between two events read (a sequence jump after a crash, a pruned outbox) is not
# tracked id by id: those ids are not coming.
MAX_GAP_SPAN = 1000
MAX_TRACKED_GAPS = 10_000
ALERT_EVENT_TYPES = frozenset({"alert.raised", "alert.resolved"})


@dataclass
class ProcessResult:
    events: int = 0
    late_events: int = 0
    rollup_rows: int = 0
    alerts_raised: int = 0
    alerts_resolved: int = 0
    webhook_deliveries: int = 0
    alert_emails: int = 0


def events_process(*, batch_size: int = 500, max_batches: int = 20, now: datetime | None = None) -> ProcessResult:
    """Process new outbox events, up to ``max_batches`` batches; returns what was done."""
    EventCursor.objects.get_or_create(name=CURSOR_NAME)
    result = ProcessResult()
    for _ in range(max_batches):
        if _process_batch(batch_size, result, now) < batch_size:
            break
    return result


def _process_batch(batch_size: int, result: ProcessResult, now: datetime | None) -> int:
    with transaction.atomic():
        cursor = EventCursor.objects.select_for_update(skip_locked=True).filter(name=CURSOR_NAME).first()
        if cursor is None:
            return 0  # another processor holds the cursor and is doing this work
        when = now or timezone.now()
        gaps_before = dict(cursor.gaps or {})
        late = _read_gaps(cursor, when)
        fresh = list(OutboxEvent.objects.filter(pk__gt=cursor.position).order_by("pk")[:batch_size])
        _advance(cursor, fresh, when)
        events = sorted(late + fresh, key=lambda e: e.pk)
        if events:
            _apply(events, when, result)
            cursor.processed += len(events)
        if events or cursor.gaps != gaps_before:
            cursor.save(update_fields=["position", "gaps", "processed", "updated_at"])
        result.events += len(events)
        result.late_events += len(late)
        return len(fresh)


def _read_gaps(cursor: EventCursor, now: datetime) -> list[OutboxEvent]:
    gaps: dict[str, str] = dict(cursor.gaps or {})
    if not gaps:
        return []
    found = list(OutboxEvent.objects.filter(pk__in=[int(k) for k in gaps]).order_by("pk"))
    for event in found:
        gaps.pop(str(event.pk), None)
    expired_before = now - GAP_GRACE
    for key, seen in list(gaps.items()):
        if datetime.fromisoformat(seen) < expired_before:
            del gaps[key]
    cursor.gaps = gaps
    return found


def _advance(cursor: EventCursor, fresh: Sequence[OutboxEvent], now: datetime) -> None:
    if not fresh:
        return
    gaps: dict[str, str] = dict(cursor.gaps or {})
    seen = now.isoformat()
    previous = cursor.position
    for event in fresh:
        missing = event.pk - previous - 1
        # A new cursor (position 0) does not wait for ids below the first event it sees.
        if previous and 0 < missing <= MAX_GAP_SPAN:
            for pk in range(previous + 1, event.pk):
                gaps[str(pk)] = seen
        elif missing > MAX_GAP_SPAN and previous:
            logger.warning(
                "event processor: ids %d..%d were never seen; not waiting for them", previous + 1, event.pk - 1
            )
        previous = event.pk
    if len(gaps) > MAX_TRACKED_GAPS:
        gaps = dict(sorted(gaps.items(), key=lambda item: int(item[0]))[-MAX_TRACKED_GAPS:])
    cursor.gaps = gaps
    cursor.position = previous


def _apply(events: list[OutboxEvent], now: datetime, result: ProcessResult) -> None:
    result.rollup_rows += rollups_apply(events)
    raised, resolved = failure_alerts_apply(events, now=now)
    result.alerts_raised += raised
    result.alerts_resolved += resolved
    result.webhook_deliveries += webhook_deliveries_create(events, now=now)
    result.alert_emails += alert_emails_create(events, now=now)


def webhook_deliveries_create(events: Sequence[OutboxEvent], *, now: datetime) -> int:
    """One pending delivery per event and active subscription of its organization that wants its type.

    Events without an organization (the dispatcher-stalled alert concerns everyone) go to every subscription that
    asks for their type. A subscription receives events that occurred after it was created, never older history.
    """
    org_ids = {e.organization_id for e in events if e.organization_id}
    has_system_events = any(e.organization_id is None for e in events)
    subscriptions = WebhookSubscription.objects.filter(is_active=True)
    if not has_system_events:
        subscriptions = subscriptions.filter(organization_id__in=org_ids)
    by_org: dict[int, list[WebhookSubscription]] = {}
    for subscription in subscriptions:
        by_org.setdefault(subscription.organization_id, []).append(subscription)
    if not by_org:
        return 0
    rows = []
    for event in events:
        candidates = (
            by_org.get(event.organization_id, [])
            if event.organization_id is not None
            else [s for subs in by_org.values() for s in subs]
        )
        for subscription in candidates:
            if subscription.wants(event.type) and event.occurred_at >= subscription.created_at:
                rows.append(
                    WebhookDelivery(
                        subscription=subscription,
                        event_id=event.event_id,
                        event_type=event.type,
                        payload=event.envelope(),
                        next_attempt_at=now,
                    )
                )
    # The unique (subscription, event) constraint makes a re-read of the same event harmless.
    WebhookDelivery.objects.bulk_create(rows, batch_size=500, ignore_conflicts=True)
    return len(rows)


def alert_emails_create(events: Sequence[OutboxEvent], *, now: datetime) -> int:
    """An email to ALERT_EMAIL_TO for every alert.raised and alert.resolved event (none when it is empty)."""
    recipients = list(settings.ALERT_EMAIL_TO)
    alert_events = [e for e in events if e.type in ALERT_EVENT_TYPES and isinstance(e.data, dict)]
    if not recipients or not alert_events:
        return 0
    alert_ids = {int(e.data["alert"]) for e in alert_events if isinstance(e.data.get("alert"), int)}
    existing = set(Alert.objects.filter(pk__in=alert_ids).values_list("pk", flat=True))
    rows = [
        AlertEmail(
            alert_id=e.data["alert"],
            event_id=e.event_id,
            event_type=e.type,
            recipients=recipients,
            next_attempt_at=now,
        )
        for e in alert_events
        if e.data.get("alert") in existing
    ]
    AlertEmail.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)
