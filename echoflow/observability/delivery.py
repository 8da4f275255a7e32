"""Sending what the event processor queued: signed webhook deliveries and alert emails, with retries.

A sender claims due rows in a short transaction (``FOR UPDATE SKIP LOCKED``; the claim pushes ``next_attempt_at``
past the request's timeout, a lease), sends outside any transaction, then records the outcome with a conditional
update on the attempt number. A sender that dies mid-request leaves the lease to expire and the row is sent again:
delivery is at least once, and receivers drop duplicates by the event id.

Webhook signature (the same scheme as ``http`` actions): ``X-EchoFlow-Timestamp`` is the Unix time of the attempt
and ``X-EchoFlow-Signature`` is ``sha256=`` + hex HMAC-SHA256 over ``<timestamp>.<body>`` with the subscription's
secret. ``webhook_signature_verify`` is the receiving side.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import F, Model, QuerySet
from django.utils import timezone

from echoflow.observability.models import Alert, AlertEmail, DeliveryStatus, WebhookDelivery
from echoflow.unindexed import unindexed_in
from runs.actions import ActionError, PermanentError, _host_allowed

logger = logging.getLogger(__name__)

# Waits before attempt 2, 3, …; the last step repeats until WEBHOOK_MAX_ATTEMPTS.
RETRY_BACKOFF_SECONDS = (10, 30, 120, 600, 1800, 3600)
SIGNATURE_TOLERANCE_SECONDS = 300
# Requests in flight at once, so one slow endpoint does not hold up every other subscription's deliveries.
SEND_CONCURRENCY = 8


def retry_delay(failed_attempts: int) -> timedelta:
    steps = RETRY_BACKOFF_SECONDS
    return timedelta(seconds=steps[min(max(failed_attempts, 1) - 1, len(steps) - 1)])


def webhook_signature(*, secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def webhook_signature_verify(
    *,
    secret: str,
    body: bytes,
    timestamp: str,
    signature: str,
    now: float | None = None,
    tolerance_seconds: int = SIGNATURE_TOLERANCE_SECONDS,
) -> bool:
    """True when ``signature`` signs ``body`` at ``timestamp`` with ``secret`` and the timestamp is recent (which
    stops an old, captured request from being replayed)."""
    try:
        sent_at = int(timestamp)
    except ValueError:
        return False
    if abs((now if now is not None else time.time()) - sent_at) > tolerance_seconds:
        return False
    return hmac.compare_digest(webhook_signature(secret=secret, timestamp=timestamp, body=body), signature)


@dataclass
class Outcome:
    ok: bool
    status_code: int | None = None
    error: str = ""
    permanent: bool = False


M = TypeVar("M", bound=Model)


def _claim(queryset: QuerySet[M], *, now: datetime, lease: timedelta, limit: int) -> list[M]:
    with transaction.atomic():
        rows = list(
            queryset.select_for_update(skip_locked=True, of=("self",))
            .filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
            .order_by("next_attempt_at")[:limit]
        )
        if rows:
            queryset.model._default_manager.filter(pk__in=[r.pk for r in rows]).update(
                attempts=F("attempts") + 1, next_attempt_at=now + lease
            )
            for row in rows:
                row.attempts += 1  # type: ignore[attr-defined]
        return rows


# --- webhooks -------------------------------------------------------------------------------------------------------
def _post(delivery: WebhookDelivery) -> Outcome:
    subscription = delivery.subscription
    try:
        _host_allowed(urlsplit(subscription.url).hostname or "")
    except PermanentError as exc:
        return Outcome(False, error=str(exc), permanent=True)
    except ActionError as exc:
        return Outcome(False, error=str(exc))
    body = json.dumps(delivery.payload, separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "EchoFlow/0.1",
        "X-EchoFlow-Event": delivery.event_type,
        "X-EchoFlow-Event-Id": str(delivery.event_id),
        "X-EchoFlow-Delivery": str(delivery.pk),
        "X-EchoFlow-Attempt": str(delivery.attempts),
        "X-EchoFlow-Timestamp": timestamp,
        "X-EchoFlow-Signature": webhook_signature(secret=subscription.secret, timestamp=timestamp, body=body),
    }
    try:
        # Redirects are not followed: a redirect could lead past the SSRF check to a private address.
        with httpx.Client(timeout=settings.WEBHOOK_TIMEOUT_SECONDS, follow_redirects=False) as client:
            response = client.post(subscription.url, content=body, headers=headers)
    except httpx.TimeoutException as exc:
        return Outcome(False, error=f"timed out: {exc}")
    except httpx.HTTPError as exc:
        return Outcome(False, error=f"connection error: {exc}")
    if 200 <= response.status_code < 300:
        return Outcome(True, status_code=response.status_code)
    return Outcome(
        False, status_code=response.status_code, error=f"answered {response.status_code}: {response.text[:500]}"
    )


def _record_webhook(delivery: WebhookDelivery, outcome: Outcome, now: datetime) -> None:
    fields: dict[str, object] = {
        "last_attempt_at": now,
        "last_status_code": outcome.status_code,
        "last_error": outcome.error[:4000],
    }
    if outcome.ok:
        fields.update(status=DeliveryStatus.SUCCEEDED, delivered_at=now, next_attempt_at=None)
    elif outcome.permanent or delivery.attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
        fields.update(status=DeliveryStatus.FAILED, next_attempt_at=None)
    else:
        fields.update(next_attempt_at=now + retry_delay(delivery.attempts))
    WebhookDelivery.objects.filter(
        unindexed_in("status", [DeliveryStatus.PENDING]), pk=delivery.pk, attempts=delivery.attempts
    ).update(**fields)


def _in_thread(function: Callable[[WebhookDelivery], Outcome]) -> Callable[[WebhookDelivery], Outcome]:
    def run(delivery: WebhookDelivery) -> Outcome:
        try:
            return function(delivery)
        except Exception as exc:  # a bug must not lose the bookkeeping of the other deliveries
            logger.exception("webhook delivery %s failed unexpectedly", delivery.pk)
            return Outcome(False, error=f"{type(exc).__name__}: {exc}")

    return run


def webhook_deliveries_send_due(*, limit: int = 100, now: datetime | None = None) -> int:
    """Send due deliveries of active subscriptions; returns how many attempts were made."""
    now = now or timezone.now()
    lease = timedelta(seconds=settings.WEBHOOK_TIMEOUT_SECONDS + 60)
    due = _claim(
        WebhookDelivery.objects.select_related("subscription").filter(subscription__is_active=True),
        now=now,
        lease=lease,
        limit=limit,
    )
    if not due:
        return 0
    if len(due) == 1:
        outcomes = [_in_thread(_post)(due[0])]
    else:
        with ThreadPoolExecutor(max_workers=min(SEND_CONCURRENCY, len(due)), thread_name_prefix="webhook") as pool:
            outcomes = list(pool.map(_in_thread(_post), due))
    finished = timezone.now()
    for delivery, outcome in zip(due, outcomes, strict=True):
        _record_webhook(delivery, outcome, finished)
        if not outcome.ok:
            logger.info("webhook delivery %s attempt %s: %s", delivery.pk, delivery.attempts, outcome.error)
    return len(due)


# --- alert emails ---------------------------------------------------------------------------------------------------
def alert_email_message(alert: Alert, event_type: str) -> tuple[str, str]:
    """Subject and plain-text body of the email about ``alert`` being raised or resolved."""
    resolved = event_type == "alert.resolved"
    subject = f"[EchoFlow] {'Resolved' if resolved else 'Alert'}: {alert.title}"
    lines = [
        f"{'Resolved' if resolved else 'Raised'}: {alert.title}",
        "",
        f"Rule: {alert.get_rule_display()}",
        f"Raised at: {alert.raised_at.isoformat()}",
    ]
    if alert.organization_id:
        lines.append(f"Organization: {alert.organization}")
    if resolved and alert.resolved_at:
        lines.append(f"Resolved at: {alert.resolved_at.isoformat()} ({alert.resolution_note})")
    if alert.detail:
        lines += ["", "Details:"] + [f"  {k}: {v}" for k, v in sorted(alert.detail.items())]
    lines += ["", f"Alert {alert.pk} in the admin: /admin/observability/alert/{alert.pk}/change/"]
    return subject[:200], "\n".join(lines) + "\n"


def alert_emails_send_due(*, limit: int = 50, now: datetime | None = None) -> int:
    now = now or timezone.now()
    lease = timedelta(seconds=settings.EMAIL_TIMEOUT + 60)
    due = _claim(AlertEmail.objects.select_related("alert", "alert__organization"), now=now, lease=lease, limit=limit)
    for email in due:
        subject, body = alert_email_message(email.alert, email.event_type)
        fields: dict[str, object]
        try:
            send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, list(email.recipients), fail_silently=False)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"[:4000]
            logger.warning("alert email %s attempt %s: %s", email.pk, email.attempts, error)
            gave_up = email.attempts >= settings.WEBHOOK_MAX_ATTEMPTS
            fields = {
                "last_error": error,
                "status": DeliveryStatus.FAILED if gave_up else DeliveryStatus.PENDING,
                "next_attempt_at": None if gave_up else timezone.now() + retry_delay(email.attempts),
            }
        else:
            fields = {"status": DeliveryStatus.SUCCEEDED, "sent_at": timezone.now(), "next_attempt_at": None}
            fields["last_error"] = ""
        AlertEmail.objects.filter(
            unindexed_in("status", [DeliveryStatus.PENDING]), pk=email.pk, attempts=email.attempts
        ).update(**fields)
    return len(due)


@dataclass
class SendResult:
    webhooks: int = 0
    emails: int = 0


def deliveries_send_due(*, now: datetime | None = None) -> SendResult:
    return SendResult(webhooks=webhook_deliveries_send_due(now=now), emails=alert_emails_send_due(now=now))
