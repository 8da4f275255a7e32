"""Webhook subscriptions: deliveries are created from the outbox for matching subscriptions, signed, sent to a
local test server, retried with backoff, logged, and refused for private addresses unless a setting allows them."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
import time_machine
from django.core.exceptions import ValidationError

from echoflow.accounts.models import Organization
from echoflow.events.bus import EventSpec, event_record
from echoflow.events.models import OutboxEvent
from echoflow.observability.delivery import webhook_deliveries_send_due, webhook_signature_verify
from echoflow.observability.models import DeliveryStatus, WebhookDelivery, WebhookSubscription
from echoflow.observability.processor import events_process
from echoflow.observability.services import (
    dispatcher_alert_check,
    webhook_delivery_retry,
    webhook_subscription_create,
)
from echoflow.observability.tasks import process_events
from runs.executor import run_execute
from runs.models import DispatcherHeartbeat
from runs.services import schedule_run_now
from schedules.services import schedule_create

pytestmark = pytest.mark.django_db


@dataclass
class Receiver:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # answers to give, in order; then 200


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real HTTP endpoint on 127.0.0.1 that records what it receives."""
    box = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            box.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            status = box.statuses.pop(0) if box.statuses else 200
            self.send_response(status)
            self.end_headers()
            self.wfile.write(b"thanks" if status == 200 else b"try later")

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    box.url = f"http://127.0.0.1:{server.server_port}/hooks/echoflow"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield box
    server.shutdown()
    server.server_close()


@pytest.fixture
def allow_local(settings: Any) -> None:
    settings.ECHOFLOW = {**settings.ECHOFLOW, "HTTP_ALLOWED_HOSTS": ["127.0.0.1"]}


def _failing_run(org: Organization) -> int:
    schedule = schedule_create(
        organization=org,
        data={
            "name": "sync",
            "trigger_kind": "cron",
            "cron": "0 0 1 1 *",
            "action_name": "echoflow.fail",
            "payload": {"permanent": True, "message": "upstream said no"},
            "max_attempts": 1,
        },
    )
    run, _ = schedule_run_now(schedule=schedule)
    run_execute(run_id=run.pk, worker="w")
    return run.pk


def test_a_failed_run_is_delivered_signed_to_the_subscribed_url(
    org: Organization, receiver: Receiver, allow_local: None
) -> None:
    subscription = webhook_subscription_create(
        organization=org, name="ops", url=receiver.url, event_types=["run.failed", "alert.*"]
    )
    run_id = _failing_run(org)
    assert process_events()["webhook_deliveries"] == 1  # run.queued, run.started were not asked for

    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    headers, body = request["headers"], request["body"]
    event = OutboxEvent.objects.get(type="run.failed")
    assert json.loads(body) == event.envelope()
    assert json.loads(body)["run"] == run_id and json.loads(body)["data"]["error"] == "upstream said no"
    assert request["path"] == "/hooks/echoflow"
    assert (headers["X-EchoFlow-Event"], headers["X-EchoFlow-Event-Id"]) == ("run.failed", str(event.event_id))
    # The receiver's check: HMAC-SHA256 over "<timestamp>.<body>" with the subscription's secret.
    timestamp = headers["X-EchoFlow-Timestamp"]
    expected = hmac.new(subscription.secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert headers["X-EchoFlow-Signature"] == f"sha256={expected}"
    assert webhook_signature_verify(
        secret=subscription.secret, body=body, timestamp=timestamp, signature=headers["X-EchoFlow-Signature"]
    )
    assert not webhook_signature_verify(
        secret="another secret", body=body, timestamp=timestamp, signature=headers["X-EchoFlow-Signature"]
    )
    assert not webhook_signature_verify(
        secret=subscription.secret,
        body=body,
        timestamp=timestamp,
        signature=headers["X-EchoFlow-Signature"],
        now=int(timestamp) + 3600,  # a captured request replayed an hour later
    )

    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_status_code, delivery.last_error) == (
        DeliveryStatus.SUCCEEDED,
        1,
        200,
        "",
    )
    assert process_events()["webhooks_sent"] == 0  # delivered once, never again


def test_a_failing_endpoint_is_retried_with_backoff_until_it_answers(
    org: Organization, receiver: Receiver, allow_local: None
) -> None:
    webhook_subscription_create(organization=org, name="ops", url=receiver.url, event_types=["run.*"])
    receiver.statuses = [500, 503]
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=1)  # after the subscription
    with time_machine.travel(start, tick=False) as traveller:
        event_record(EventSpec(type="run.failed", organization_id=org.pk, run_id=7, data={"status": "failed"}))
        events_process()
        assert webhook_deliveries_send_due() == 1
        delivery = WebhookDelivery.objects.get()
        assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("pending", 1, 500)
        assert delivery.last_error == "answered 500: try later"
        assert delivery.next_attempt_at == start + timedelta(seconds=10)
        assert webhook_deliveries_send_due() == 0  # not before its backoff

        traveller.shift(timedelta(seconds=11))
        assert webhook_deliveries_send_due() == 1
        delivery.refresh_from_db()
        assert (delivery.attempts, delivery.last_status_code) == (2, 503)
        assert delivery.next_attempt_at == start + timedelta(seconds=11 + 30)

        traveller.shift(timedelta(seconds=31))
        assert webhook_deliveries_send_due() == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("succeeded", 3, 200)
    assert len(receiver.requests) == 3
    # Every attempt is signed afresh and names its attempt number; the event id stays the same.
    assert [r["headers"]["X-EchoFlow-Attempt"] for r in receiver.requests] == ["1", "2", "3"]
    assert len({r["headers"]["X-EchoFlow-Event-Id"] for r in receiver.requests}) == 1


def test_a_delivery_is_given_up_after_the_last_attempt_and_can_be_sent_again(
    org: Organization, receiver: Receiver, allow_local: None, settings: Any
) -> None:
    settings.WEBHOOK_MAX_ATTEMPTS = 2
    webhook_subscription_create(organization=org, name="ops", url=receiver.url, event_types=["*"])
    receiver.statuses = [500, 500]
    event_record(EventSpec(type="run.failed", organization_id=org.pk))
    events_process()
    webhook_deliveries_send_due()
    with time_machine.travel(datetime.now(UTC) + timedelta(seconds=20)):
        webhook_deliveries_send_due()
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == (DeliveryStatus.FAILED, 2, None)

    assert webhook_delivery_retry(delivery=delivery)  # the admin's "send again now"
    assert webhook_deliveries_send_due() == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.SUCCEEDED, 1)


def test_a_private_address_is_refused_unless_a_setting_allows_it(org: Organization, receiver: Receiver) -> None:
    webhook_subscription_create(organization=org, name="ops", url=receiver.url, event_types=["run.failed"])
    event_record(EventSpec(type="run.failed", organization_id=org.pk))
    events_process()
    assert webhook_deliveries_send_due() == 1
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == DeliveryStatus.FAILED  # permanent: not retried
    assert delivery.last_error.startswith("refused: 127.0.0.1 resolves to the non-public address 127.0.0.1")
    assert receiver.requests == []


def test_only_matching_subscriptions_of_the_events_organization_receive_it(
    org: Organization, other_org: Organization, receiver: Receiver, allow_local: None
) -> None:
    mine = webhook_subscription_create(organization=org, name="runs", url=receiver.url, event_types=["run.*"])
    webhook_subscription_create(organization=org, name="alerts", url=receiver.url, event_types=["alert.raised"])
    theirs = webhook_subscription_create(organization=other_org, name="all", url=receiver.url, event_types=["*"])
    paused = webhook_subscription_create(
        organization=org, name="paused", url=receiver.url, event_types=["*"], is_active=False
    )
    before = datetime.now(UTC) - timedelta(hours=1)
    event_record(EventSpec(type="run.succeeded", organization_id=org.pk), occurred_at=before)  # older than all
    event_record(EventSpec(type="run.succeeded", organization_id=org.pk))
    event_record(EventSpec(type="schedule.created", organization_id=org.pk))
    events_process()
    assert [(d.subscription_id, d.event_type) for d in WebhookDelivery.objects.all()] == [(mine.pk, "run.succeeded")]
    assert theirs.pk and paused.pk

    # The dispatcher-stalled alert has no organization: every subscription asking for alert events gets it.
    DispatcherHeartbeat.objects.create(name="dispatcher", beat_at=datetime.now(UTC) - timedelta(minutes=5))
    dispatcher_alert_check()
    events_process()
    alert_deliveries = WebhookDelivery.objects.filter(event_type="alert.raised")
    assert sorted(d.subscription.name for d in alert_deliveries) == ["alerts", "all"]


def test_subscriptions_validate_url_and_event_types(org: Organization) -> None:
    with pytest.raises(ValidationError) as error:
        webhook_subscription_create(organization=org, name="x", url="ftp://example.com/", event_types=["run.failed"])
    assert "url" in error.value.message_dict
    with pytest.raises(ValidationError) as error:
        webhook_subscription_create(organization=org, name="x", url="https://example.com/", event_types=[])
    assert "event_types" in error.value.message_dict
    with pytest.raises(ValidationError):
        webhook_subscription_create(organization=org, name="x", url="https://example.com/", event_types=["nope.*"])
    subscription = webhook_subscription_create(
        organization=org, name="x", url="https://example.com/hook", event_types=["run.failed"]
    )
    assert len(subscription.secret) == 64 and WebhookSubscription.objects.count() == 1
