"""`manage.py consume_events` and the consumer API against real Redis: consumer groups, acknowledgement, and the
reclaim (XAUTOCLAIM) of a message a dead consumer left pending."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from echoflow.accounts.models import Organization
from echoflow.events.bus import EventSpec, event_record, outbox_relay
from echoflow.events.consumer import EventConsumer, StreamEvent
from echoflow.events.models import OutboxEvent
from echoflow.observability.processor import events_process
from echoflow.observability.services import dispatcher_alert_check, schedule_alert_rule_set
from runs.dispatcher import dispatch_tick
from runs.executor import run_execute
from runs.models import DispatcherHeartbeat, Run
from runs.services import run_cancel, run_create_adhoc, schedule_run_now
from schedules.services import (
    schedule_cancel,
    schedule_create,
    schedule_delete,
    schedule_pause,
    schedule_resume,
    schedule_update,
)

pytestmark = [pytest.mark.redis, pytest.mark.django_db]

STREAM = settings.EVENTS_STREAM


def _lines(out: StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


def _consume(*args: str) -> list[dict[str, object]]:
    out = StringIO()
    call_command("consume_events", *args, "--exit-when-idle", "--block", "50", stdout=out)
    return _lines(out)


def _pending(client: redis.Redis, group: str, consumer: str | None = None) -> int:
    if consumer is None:
        return int(client.xpending(STREAM, group)["pending"])
    return len(client.xpending_range(STREAM, group, min="-", max="+", count=100, consumername=consumer))


def test_a_group_gets_the_chosen_types_once_and_everything_is_acknowledged(
    org: Organization, redis_client: redis.Redis
) -> None:
    for action in ("echoflow.noop", "echoflow.fail"):
        schedule = schedule_create(
            organization=org,
            data={
                "name": action,
                "trigger_kind": "cron",
                "cron": "0 0 1 1 *",
                "action_name": action,
                "payload": {"permanent": True},
                "max_attempts": 1,
            },
        )
        run, _ = schedule_run_now(schedule=schedule)
        run_execute(run_id=run.pk, worker="w")
    assert outbox_relay() == 8  # two schedule.created, then run.queued, run.started and an outcome per run

    printed = _consume("--group", "ops", "--types", "run.failed,run.succeeded", "--start", "0")
    expected = [e.envelope() for e in OutboxEvent.objects.filter(type__in=["run.succeeded", "run.failed"])]
    assert printed == expected
    assert [e["type"] for e in printed] == ["run.succeeded", "run.failed"]
    assert _pending(redis_client, "ops") == 0  # printed ones and skipped ones: all acknowledged

    assert _consume("--group", "ops", "--types", "run.failed", "--start", "0") == []  # the group has read them
    assert len(_consume("--group", "audit", "--start", "0")) == 8  # another group gets every event
    # A group created with the default start ("$") sees only what comes after it.
    assert _consume("--group", "late") == []
    event_record(EventSpec(type="run.failed", organization_id=org.pk))
    outbox_relay()
    assert [e["type"] for e in _consume("--group", "late")] == ["run.failed"]


def test_a_message_left_pending_by_a_dead_consumer_is_reclaimed(org: Organization, redis_client: redis.Redis) -> None:
    redis_client.xgroup_create(STREAM, "billing", id="0", mkstream=True)
    for n in range(3):
        event_record(EventSpec(type="run.succeeded", organization_id=org.pk, run_id=n + 1))
    outbox_relay()
    # A consumer takes the first message and dies before acknowledging it.
    taken = redis_client.xreadgroup("billing", "worker-dead", {STREAM: ">"}, count=1)
    dead_id = taken[0][1][0][0].decode()
    assert _pending(redis_client, "billing", "worker-dead") == 1

    # Before it has been idle for --claim-idle, a live consumer leaves it alone and reads the rest.
    printed = _consume("--group", "billing", "--consumer", "worker-live", "--claim-idle", "30")
    assert [e["run"] for e in printed] == [2, 3]
    assert _pending(redis_client, "billing", "worker-dead") == 1

    time.sleep(0.3)
    printed = _consume("--group", "billing", "--consumer", "worker-live", "--claim-idle", "0.2")
    assert [e["run"] for e in printed] == [1]
    assert _pending(redis_client, "billing") == 0
    assert redis_client.xrange(STREAM, min=dead_id, max=dead_id)  # still in the stream, only acknowledged


def test_the_python_api_retries_a_failing_handler_then_dead_letters_it(
    org: Organization, redis_client: redis.Redis
) -> None:
    redis_client.delete(f"{STREAM}:dead")
    event_record(EventSpec(type="run.failed", organization_id=org.pk, run_id=41))
    outbox_relay()
    seen: list[StreamEvent] = []

    def flaky(event: StreamEvent) -> None:
        seen.append(event)
        if len(seen) == 1:
            raise RuntimeError("the database of the receiving system is down")

    consumer = EventConsumer(
        group="sync", consumer="c1", start="0", claim_idle_seconds=0.05, max_deliveries=2, block_ms=50
    )
    assert consumer.run(flaky, exit_when_idle=True) == 0  # the failure leaves it pending
    assert consumer.pending_count() == 1
    time.sleep(0.1)
    assert consumer.run(flaky, exit_when_idle=True) == 1  # reclaimed and handled the second time
    assert [(e.type, e.envelope["run"], e.deliveries) for e in seen] == [("run.failed", 41, 1), ("run.failed", 41, 2)]
    assert consumer.pending_count() == 0

    def broken(event: StreamEvent) -> None:
        raise RuntimeError("always")

    event_record(EventSpec(type="run.failed", organization_id=org.pk, run_id=42))
    outbox_relay()
    for _ in range(3):
        consumer.run(broken, exit_when_idle=True)
        time.sleep(0.1)
    assert consumer.pending_count() == 0
    dead = redis_client.xrange(f"{STREAM}:dead")
    assert len(dead) == 1
    fields = {k.decode(): v.decode() for k, v in dead[0][1].items()}
    assert json.loads(fields["envelope"])["run"] == 42 and fields["group"] == "sync"
    assert fields["reason"] == "delivered 3 times without success"
    redis_client.delete(f"{STREAM}:dead")


# --- the envelope's JSON Schema ------------------------------------------------------------------------------------
SCHEMA_FILE = Path(__file__).resolve().parent.parent / "docs" / "event-envelope.schema.json"
EVENTS_DOC = SCHEMA_FILE.parent / "events.md"


def test_real_envelopes_match_the_documented_schema(org: Organization, redis_client: redis.Redis) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)

    # Every kind of event the product writes: schedule lifecycle, runs that succeed, retry, fail, wait-free
    # cancel, ad-hoc runs, and both alerts.
    base = {"trigger_kind": "cron", "cron": "0 0 1 1 *", "max_attempts": 2, "backoff_seconds": [1]}
    good = schedule_create(organization=org, data={**base, "name": "good", "action_name": "echoflow.noop"})
    bad = schedule_create(
        organization=org, data={**base, "name": "bad", "action_name": "echoflow.fail", "payload": {"message": "no"}}
    )
    schedule_alert_rule_set(schedule=bad, consecutive_failures=1)
    schedule_update(schedule=good, data={"description": "now documented"}, expected_version=good.version)
    schedule_pause(schedule=good, note="maintenance")
    schedule_resume(schedule=good)
    for schedule in (good, bad):
        run, _ = schedule_run_now(schedule=schedule)
        run_execute(run_id=run.pk, worker="w")
    retried = Run.objects.get(schedule=bad)
    Run.objects.filter(pk=retried.pk).update(next_attempt_at=retried.created_at)
    dispatch_tick(sender=lambda rows: None)
    run_execute(run_id=retried.pk, worker="w")
    run_cancel(run=schedule_run_now(schedule=good)[0])
    adhoc, _ = run_create_adhoc(organization=org, action_kind="python", action_name="echoflow.echo", payload={"a": 1})
    run_execute(run_id=adhoc.pk, worker="w")
    events_process()  # raises the failure alert
    DispatcherHeartbeat.objects.update_or_create(name="dispatcher", defaults={"beat_at": timezone.now()})
    DispatcherHeartbeat.objects.filter(name="dispatcher").update(beat_at=timezone.now() - timedelta(minutes=5))
    dispatcher_alert_check()
    DispatcherHeartbeat.objects.filter(name="dispatcher").update(beat_at=timezone.now())
    dispatcher_alert_check()
    schedule_cancel(schedule=bad)
    schedule_delete(schedule=good)

    envelopes = [e.envelope() for e in OutboxEvent.objects.order_by("id")]
    types = {e["type"] for e in envelopes}
    assert types >= {
        "schedule.created",
        "schedule.updated",
        "schedule.paused",
        "schedule.resumed",
        "schedule.cancelled",
        "schedule.deleted",
        "run.queued",
        "run.started",
        "run.succeeded",
        "run.retrying",
        "run.failed",
        "run.cancelled",
        "alert.raised",
        "alert.resolved",
    }
    outbox_relay()
    from_stream = [json.loads(fields[b"envelope"]) for _, fields in redis_client.xrange(STREAM)]
    assert from_stream == envelopes
    for envelope in from_stream:
        errors = sorted(validator.iter_errors(envelope), key=str)
        assert not errors, f"{envelope['type']}: {errors[0].message}"

    # A broken envelope is refused, so the test would notice a schema that accepts anything.
    broken = {**from_stream[0], "org": "acme"}
    assert list(validator.iter_errors(broken))
    assert not validator.is_valid({**from_stream[0], "extra": 1})


def test_the_events_doc_embeds_the_schema_file() -> None:
    doc = EVENTS_DOC.read_text()
    block = doc.split("```json\n", 1)[1].split("```", 1)[0] if "```json\n" in doc else ""
    assert json.loads(block) == json.loads(SCHEMA_FILE.read_text())
