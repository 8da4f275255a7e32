"""Nothing is lost when parts die: events wait in the outbox while Redis is away, and a run whose worker was
killed mid-attempt is found by the reaper and retried."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import time_machine
from django.conf import settings
from django.utils import timezone

from echoflow.accounts.models import Organization
from echoflow.events.bus import outbox_relay
from echoflow.events.models import OutboxEvent
from runs.dispatcher import dispatch_tick
from runs.executor import run_execute
from runs.models import AttemptOutcome, Run, RunAttempt, RunStatus
from runs.services import runs_reap, schedule_run_now
from schedules.services import schedule_create
from tests.conftest import child_env, embedded_child, wait_until

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.redis
@pytest.mark.django_db
def test_events_wait_in_the_outbox_while_redis_is_down_and_leave_in_order(
    org: Organization, redis_client: redis.Redis, settings: Any
) -> None:
    schedule = schedule_create(
        organization=org,
        data={"name": "s", "trigger_kind": "cron", "cron": "0 0 1 1 *", "action_name": "echoflow.noop"},
    )
    run, _ = schedule_run_now(schedule=schedule)
    run_execute(run_id=run.pk, worker="w")

    live_url = settings.EVENTS_REDIS_URL
    settings.EVENTS_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there: Redis is "down"
    assert outbox_relay() == 0
    pending = list(OutboxEvent.objects.filter(relayed_at__isnull=True).order_by("id"))
    assert [e.type for e in pending] == ["schedule.created", "run.queued", "run.started", "run.succeeded"]

    settings.EVENTS_REDIS_URL = live_url  # Redis is back
    assert outbox_relay() == 4
    assert not OutboxEvent.objects.filter(relayed_at__isnull=True).exists()
    entries = redis_client.xrange(settings.EVENTS_STREAM)
    envelopes = [json.loads(fields[b"envelope"]) for _, fields in entries]
    assert [e["type"] for e in envelopes] == ["schedule.created", "run.queued", "run.started", "run.succeeded"]
    assert [e["id"] for e in envelopes] == [str(e.event_id) for e in pending]
    assert envelopes == [e.envelope() for e in pending]
    # Each row records when it left and under which stream id, so a consumer can be pointed at it.
    relayed = list(OutboxEvent.objects.order_by("id").values_list("stream_id", "relayed_at"))
    assert [stream_id for stream_id, _ in relayed] == [entry_id.decode() for entry_id, _ in entries]
    assert all(relayed_at is not None for _, relayed_at in relayed)
    assert outbox_relay() == 0  # sent once, never again


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_attempt_is_reaped_and_the_run_retried(org: Organization, tmp_path: Path) -> None:
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    schedule = schedule_create(
        organization=org,
        data={
            "name": "long job",
            "trigger_kind": "cron",
            "cron": "0 0 1 1 *",
            "action_name": "echoflow.sleep",
            "payload": {"seconds": 60},
            "max_attempts": 2,
            "backoff_seconds": [10],
        },
    )
    run, _ = schedule_run_now(schedule=schedule)
    env = child_env(tmp_path)
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "echoflow",
            "worker",
            "--pool",
            "solo",
            "-Q",
            settings.WORKER_QUEUES,
            "-l",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        dispatch_tick()
        wait_until(
            lambda: Run.objects.filter(pk=run.pk, status=RunStatus.RUNNING).exists(),
            timeout=60,
            what="the run to start",
        )
    finally:
        os.killpg(worker.pid, signal.SIGKILL)  # the machine is gone, no chance to clean up
        worker.wait(10)

    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING  # nobody will ever finish it...
    assert runs_reap() == 0  # ...but its heartbeat is still fresh
    stale = timedelta(seconds=settings.ECHOFLOW["HEARTBEAT_STALE_SECONDS"] * 4 + 5)
    with time_machine.travel(timezone.now() + stale, tick=False):
        assert runs_reap() == 1
        run.refresh_from_db()
        assert run.status == RunStatus.RETRYING
        attempt = RunAttempt.objects.get(run=run, number=1)
        assert attempt.outcome == AttemptOutcome.LOST
        assert "stopped heartbeating" in attempt.error
        assert run.next_attempt_at is not None
        next_attempt = run.next_attempt_at
    with time_machine.travel(next_attempt + timedelta(seconds=1), tick=False):
        tick = dispatch_tick(sender=lambda rows: None)
        assert (tick.retried, tick.enqueued) == (1, 1)
    assert Run.objects.get(pk=run.pk).status == RunStatus.QUEUED


_SQLITE_RELAY_CHILD = textwrap.dedent(
    """
    import json

    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from django.db import connection

    from echoflow.accounts.services import organization_get_or_create
    from echoflow.events.bus import outbox_relay
    from echoflow.events.models import OutboxEvent
    from runs.executor import run_execute
    from runs.services import schedule_run_now
    from schedules.services import schedule_create

    org = organization_get_or_create(name="Acme", slug="acme")
    data = {"name": "s", "trigger_kind": "cron", "cron": "0 0 1 1 *", "action_name": "echoflow.noop"}
    for i in range(3):
        schedule = schedule_create(organization=org, data={**data, "name": f"s{i}"})
        run, _ = schedule_run_now(schedule=schedule)
        run_execute(run_id=run.pk, worker="w")
    first = outbox_relay()
    print(json.dumps({
        "vendor": connection.vendor,
        "relayed": [first, outbox_relay()],
        "rows": list(OutboxEvent.objects.order_by("id").values_list("type", "stream_id")),
        "unmarked": OutboxEvent.objects.filter(relayed_at__isnull=True).count(),
    }))
    """
)


@pytest.mark.redis
@pytest.mark.django_db(False)
def test_the_relay_marks_events_on_sqlite_with_their_stream_ids(tmp_path: Path, redis_client: redis.Redis) -> None:
    """The embedded database given a Redis: the relay marks its batch with Django's bulk_update (PostgreSQL has its
    own one-statement UPDATE), and each row gets the id of its own stream entry."""
    stream = f"echoflow:test-sqlite-relay:{os.getpid()}"
    try:
        got = embedded_child(_SQLITE_RELAY_CHILD, tmp_path, EVENTS_REDIS_URL=settings.REDIS_URL, EVENTS_STREAM=stream)
        entries = redis_client.xrange(stream)
    finally:
        redis_client.delete(stream)
        for key in redis_client.scan_iter(f"{stream}:sent:*"):
            redis_client.delete(key)
    assert got["vendor"] == "sqlite"
    types = ["schedule.created", "run.queued", "run.started", "run.succeeded"] * 3
    assert got["relayed"] == [12, 0]
    assert got["unmarked"] == 0
    assert sorted(t for t, _ in got["rows"]) == sorted(types)
    # Row by row, the stream id stored is the one Redis gave that event's entry.
    assert [sid for _, sid in got["rows"]] == [entry_id.decode() for entry_id, _ in entries]
    assert [t for t, _ in got["rows"]] == [json.loads(fields[b"envelope"])["type"] for _, fields in entries]


@pytest.mark.redis
@pytest.mark.django_db
def test_an_event_is_added_to_the_stream_once_even_if_a_relayer_died_before_marking_it(
    org: Organization, redis_client: redis.Redis
) -> None:
    schedule_create(
        organization=org,
        data={"name": "s", "trigger_kind": "cron", "cron": "0 0 1 1 *", "action_name": "echoflow.noop"},
    )
    assert outbox_relay() == 1
    # Simulate a relayer that added the event to Redis and was killed before its database commit.
    OutboxEvent.objects.update(relayed_at=None, stream_id="")
    assert outbox_relay() == 1
    assert redis_client.xlen(settings.EVENTS_STREAM) == 1
    for key in redis_client.scan_iter(f"{settings.EVENTS_STREAM}:sent:*"):
        redis_client.delete(key)


@pytest.mark.django_db
def test_the_reaper_closes_the_attempt_of_a_run_cancelled_while_its_worker_died(org: Organization) -> None:
    schedule = schedule_create(
        organization=org,
        data={"name": "s", "trigger_kind": "cron", "cron": "0 0 1 1 *", "action_name": "echoflow.noop"},
    )
    run, _ = schedule_run_now(schedule=schedule)
    now = timezone.now()
    # The state a worker leaves behind when it is killed right after cancel_other cancelled its run.
    Run.objects.filter(pk=run.pk).update(status=RunStatus.CANCELLED, attempts=1, heartbeat_at=now, finished_at=now)
    RunAttempt.objects.create(run=run, number=1, started_at=now, worker="gone")
    from runs.services import runs_reap as reap

    assert reap(now=now) == 0  # its heartbeat is fresh: the executor may still close it
    later = now + timedelta(seconds=settings.ECHOFLOW["HEARTBEAT_STALE_SECONDS"] * 4 + 1)
    assert reap(now=later) == 1
    attempt = RunAttempt.objects.get(run=run)
    assert attempt.outcome == AttemptOutcome.CANCELLED and attempt.finished_at == later
