"""Writes about alerts, alert rules and webhook subscriptions.

Alerts are raised once: the partial unique constraint ``alert_one_open_per_key`` refuses a second unresolved
alert for the same rule and subject, so any number of processes may check the same condition at once. Raising
and resolving write ``alert.raised``/``alert.resolved`` to the outbox in the same transaction; emails and webhooks
are delivered from those events (``processor``, ``delivery``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from echoflow.accounts.models import Organization
from echoflow.audit.services import audit_record
from echoflow.events.bus import EventSpec, event_record
from echoflow.events.models import OutboxEvent
from echoflow.observability.models import (
    Alert,
    AlertRule,
    DeliveryStatus,
    FailureStreak,
    ScheduleAlertRule,
    WebhookDelivery,
    WebhookSubscription,
)
from runs.selectors import dispatcher_heartbeat_age
from schedules.models import Schedule

logger = logging.getLogger(__name__)

FAILURE_TYPES = frozenset({"run.failed", "run.timed_out"})
SCHEDULE_GONE_TYPES = frozenset({"schedule.deleted", "schedule.cancelled"})
DISPATCHER_KEY = "dispatcher"


class AlertStateError(ValueError):
    """The alert is not in a state that allows the requested operation."""


def schedule_alert_key(schedule_id: int) -> str:
    return f"schedule:{schedule_id}"


def _alert_event(alert: Alert, kind: str) -> None:
    event_record(
        EventSpec(
            type=f"alert.{kind}",
            organization_id=alert.organization_id,
            schedule_id=alert.schedule_id,
            data={
                "alert": alert.pk,
                "rule": alert.rule,
                "key": alert.key,
                "status": alert.status,
                "title": alert.title,
                "detail": alert.detail,
                "raised_at": alert.raised_at.isoformat(),
                "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
                "resolution_note": alert.resolution_note,
            },
        )
    )


@transaction.atomic
def alert_raise(
    *,
    rule: str,
    key: str,
    title: str,
    detail: Mapping[str, Any] | None = None,
    organization_id: int | None = None,
    schedule_id: int | None = None,
    now: datetime | None = None,
) -> Alert | None:
    """Open an alert unless one is open for ``rule``/``key``; returns the new alert, or None if one was open."""
    if Alert.objects.filter(rule=rule, key=key, resolved_at__isnull=True).exists():
        return None
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                rule=rule,
                key=key,
                title=title[:300],
                detail=dict(detail or {}),
                organization_id=organization_id,
                schedule_id=schedule_id,
                raised_at=now or timezone.now(),
            )
    except IntegrityError:
        return None  # raised by another process at the same moment: the constraint keeps it to one
    _alert_event(alert, "raised")
    logger.warning("alert raised: %s", alert.title)
    return alert


@transaction.atomic
def alert_resolve(*, rule: str, key: str, note: str, now: datetime | None = None) -> Alert | None:
    """Resolve the open alert for ``rule``/``key``; returns it, or None if none was open."""
    alert = Alert.objects.select_for_update().filter(rule=rule, key=key, resolved_at__isnull=True).first()
    if alert is None:
        return None
    alert.resolved_at = now or timezone.now()
    alert.resolution_note = note[:300]
    alert.save(update_fields=["resolved_at", "resolution_note"])
    _alert_event(alert, "resolved")
    logger.info("alert resolved: %s (%s)", alert.title, note)
    return alert


@transaction.atomic
def alert_acknowledge(
    *, alert: Alert, user: AbstractBaseUser | AnonymousUser | None = None, now: datetime | None = None
) -> Alert:
    """A person says they are on it. The alert stays open until its condition clears; acknowledging twice is fine."""
    locked = Alert.objects.select_for_update().get(pk=alert.pk)
    if locked.resolved_at is not None:
        why = locked.resolution_note or "its condition cleared"
        raise AlertStateError(
            f"alert {locked.pk} is already resolved ({why}); only an unresolved alert can be acknowledged"
        )
    if locked.acknowledged_at is None:
        locked.acknowledged_at = now or timezone.now()
        if user is not None and getattr(user, "is_authenticated", False):
            locked.acknowledged_by_id = user.pk
        locked.save(update_fields=["acknowledged_at", "acknowledged_by"])
        audit_record(
            action="alert.acknowledge",
            target=locked,
            organization_id=locked.organization_id,
            changes={"rule": locked.rule, "schedule": locked.schedule_id},
        )
    return locked


def _kick_event_processing() -> None:
    """Deliver a dispatcher alert without waiting for beat, which may be the very thing that stopped."""
    try:
        from echoflow.observability.tasks import process_events

        process_events.apply_async(retry=False, expires=60)
    except Exception as exc:  # the broker is down too: the periodic task delivers it later
        logger.warning("could not queue event processing for a dispatcher alert: %s", exc)


def dispatcher_alert_check(*, now: datetime | None = None) -> str | None:
    """Raise the dispatcher-stalled alert when the heartbeat is older than ALERT_DISPATCHER_STALE_SECONDS, resolve
    it when the heartbeat is fresh again. Returns "raised", "resolved" or None (no change).

    A dispatcher that never ran raises nothing (a fresh install); ``/healthz`` reports that case.
    """
    now = now or timezone.now()
    age = dispatcher_heartbeat_age(now=now)
    if age is None:
        return None
    seconds = age.total_seconds()
    limit = settings.ALERT_DISPATCHER_STALE_SECONDS
    if seconds > limit:
        if Alert.objects.filter(
            rule=AlertRule.DISPATCHER_STALLED, key=DISPATCHER_KEY, resolved_at__isnull=True
        ).exists():
            return None
        with transaction.atomic():
            alert = alert_raise(
                rule=AlertRule.DISPATCHER_STALLED,
                key=DISPATCHER_KEY,
                title=f"The dispatcher has not ticked for {seconds:.0f} s (limit {limit} s)",
                detail={
                    "heartbeat_age_seconds": round(seconds, 1),
                    "limit_seconds": limit,
                    "last_heartbeat": (now - age).isoformat(),
                },
                now=now,
            )
            if alert is not None:
                transaction.on_commit(_kick_event_processing)
        return "raised" if alert is not None else None
    if not Alert.objects.filter(
        rule=AlertRule.DISPATCHER_STALLED, key=DISPATCHER_KEY, resolved_at__isnull=True
    ).exists():
        return None
    with transaction.atomic():
        resolved = alert_resolve(
            rule=AlertRule.DISPATCHER_STALLED,
            key=DISPATCHER_KEY,
            note=f"the dispatcher ticked again ({seconds:.1f} s ago)",
            now=now,
        )
        if resolved is not None:
            transaction.on_commit(_kick_event_processing)
    return "resolved" if resolved is not None else None


def failure_alerts_apply(events: Iterable[OutboxEvent], *, now: datetime | None = None) -> tuple[int, int]:
    """Count failed runs in a row per schedule, in event order; raise at the schedule's threshold, resolve at the
    next success (or when the schedule is cancelled or deleted). Returns (raised, resolved).

    Called by the event processor inside its transaction. Cancelled and skipped runs neither break nor extend a
    streak: they say nothing about whether the action works.
    """
    relevant = [
        e
        for e in events
        if e.schedule_id and (e.type in FAILURE_TYPES or e.type == "run.succeeded" or e.type in SCHEDULE_GONE_TYPES)
    ]
    if not relevant:
        return 0, 0
    now = now or timezone.now()
    schedule_ids = {int(e.schedule_id) for e in relevant if e.schedule_id}
    streaks = {s.schedule_id: s for s in FailureStreak.objects.filter(schedule_id__in=schedule_ids)}
    rules = {r.schedule_id: r for r in ScheduleAlertRule.objects.filter(schedule_id__in=schedule_ids)}
    open_keys = set(
        Alert.objects.filter(
            rule=AlertRule.CONSECUTIVE_FAILURES,
            key__in=[schedule_alert_key(s) for s in schedule_ids],
            resolved_at__isnull=True,
        ).values_list("key", flat=True)
    )
    default_threshold = settings.ALERT_CONSECUTIVE_FAILURES
    changed: dict[int, FailureStreak] = {}
    raised = resolved = 0
    for event in relevant:
        schedule_id = int(event.schedule_id or 0)
        key = schedule_alert_key(schedule_id)
        streak = streaks.get(schedule_id)
        if streak is None:
            streak = streaks[schedule_id] = FailureStreak(
                schedule_id=schedule_id, organization_id=event.organization_id or 0
            )
        data = event.data if isinstance(event.data, dict) else {}
        if event.type in FAILURE_TYPES:
            streak.failures += 1
            streak.last_run_id = event.run_id
            changed[schedule_id] = streak
            rule = rules.get(schedule_id)
            threshold = rule.consecutive_failures if rule else default_threshold
            if (rule is not None and not rule.enabled) or streak.failures < threshold:
                continue
            detail = {
                "schedule": schedule_id,
                "consecutive_failures": streak.failures,
                "threshold": threshold,
                "last_run": event.run_id,
                "last_status": event.type.removeprefix("run."),
                "last_error": str(data.get("error", ""))[:500],
            }
            if key in open_keys:
                # Still failing: keep the count current on the open alert; it is not raised again.
                Alert.objects.filter(rule=AlertRule.CONSECUTIVE_FAILURES, key=key, resolved_at__isnull=True).update(
                    detail=detail
                )
                continue
            name = Schedule.objects.filter(pk=schedule_id).values_list("name", flat=True).first() or f"#{schedule_id}"
            detail["schedule_name"] = name
            alert = alert_raise(
                rule=AlertRule.CONSECUTIVE_FAILURES,
                key=key,
                title=f"Schedule '{name}' failed {streak.failures} times in a row",
                detail=detail,
                organization_id=event.organization_id,
                schedule_id=schedule_id if Schedule.objects.filter(pk=schedule_id).exists() else None,
                now=now,
            )
            open_keys.add(key)
            raised += alert is not None
            continue
        if streak.failures or streak.pk is not None:
            streak.failures = 0
            streak.last_run_id = event.run_id or streak.last_run_id
            changed[schedule_id] = streak
        if key in open_keys:
            note = (
                f"run {event.run_id} succeeded"
                if event.type == "run.succeeded"
                else f"the schedule was {event.type.removeprefix('schedule.')}"
            )
            resolved += alert_resolve(rule=AlertRule.CONSECUTIVE_FAILURES, key=key, note=note, now=now) is not None
            open_keys.discard(key)
    rows = [
        FailureStreak(
            schedule_id=s.schedule_id,
            organization_id=s.organization_id,
            failures=s.failures,
            last_run_id=s.last_run_id,
            updated_at=now,
        )
        for s in changed.values()
    ]
    FailureStreak.objects.bulk_create(
        rows,
        batch_size=1000,
        update_conflicts=True,
        unique_fields=["schedule_id"],
        update_fields=["failures", "last_run_id", "updated_at"],
    )
    return raised, resolved


@transaction.atomic
def schedule_alert_rule_set(
    *, schedule: Schedule, consecutive_failures: int, enabled: bool = True
) -> ScheduleAlertRule:
    """Set how many failed runs in a row raise this schedule's alert (or turn the alert off)."""
    if consecutive_failures < 1:
        raise ValidationError({"consecutive_failures": "must be at least 1"})
    rule, _ = ScheduleAlertRule.objects.update_or_create(
        schedule=schedule, defaults={"consecutive_failures": consecutive_failures, "enabled": enabled}
    )
    audit_record(
        action="schedule.alert_rule",
        target=schedule,
        organization_id=schedule.organization_id,
        changes={"consecutive_failures": consecutive_failures, "enabled": enabled},
    )
    return rule


# --- webhook subscriptions ------------------------------------------------------------------------------------------
@transaction.atomic
def webhook_subscription_create(
    *,
    organization: Organization,
    name: str,
    url: str,
    event_types: list[str],
    is_active: bool = True,
) -> WebhookSubscription:
    """Subscribe ``url`` to ``event_types``; the returned subscription's ``secret`` signs every delivery."""
    subscription = WebhookSubscription(
        organization=organization, name=name, url=url, event_types=list(event_types), is_active=is_active
    )
    subscription.full_clean()
    subscription.save()
    audit_record(
        action="webhook.create",
        target=subscription,
        organization_id=organization.pk,
        changes={"url": url, "event_types": list(event_types)},
    )
    return subscription


@transaction.atomic
def webhook_subscription_update(*, subscription: WebhookSubscription, data: Mapping[str, Any]) -> WebhookSubscription:
    """Change name, url, event_types or is_active; ``rotate_secret=True`` issues a new secret."""
    allowed = {"name", "url", "event_types", "is_active"}
    unknown = set(data) - allowed - {"rotate_secret"}
    if unknown:
        raise ValidationError({name: "cannot be changed" for name in sorted(unknown)})
    changes: dict[str, tuple[Any, Any]] = {}
    for name in allowed & set(data):
        before = getattr(subscription, name)
        if before != data[name]:
            changes[name] = (before, data[name])
            setattr(subscription, name, data[name])
    if data.get("rotate_secret"):
        from echoflow.observability.models import new_webhook_secret

        subscription.secret = new_webhook_secret()
        changes["secret"] = ("…", "rotated")
    subscription.full_clean()
    subscription.save()
    if changes:
        audit_record(
            action="webhook.update", target=subscription, organization_id=subscription.organization_id, changes=changes
        )
    return subscription


@transaction.atomic
def webhook_subscription_delete(*, subscription: WebhookSubscription) -> None:
    audit_record(
        action="webhook.delete",
        target=subscription,
        organization_id=subscription.organization_id,
        changes={"url": subscription.url},
    )
    subscription.delete()


def webhook_delivery_retry(*, delivery: WebhookDelivery, now: datetime | None = None) -> bool:
    """Send a failed (or waiting) delivery again now, with a fresh attempt budget. False if it was delivered."""
    return bool(
        WebhookDelivery.objects.filter(pk=delivery.pk)
        .exclude(status=DeliveryStatus.SUCCEEDED)
        .update(status=DeliveryStatus.PENDING, attempts=0, next_attempt_at=now or timezone.now(), last_error="")
    )
