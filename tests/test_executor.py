"""One attempt of one run: outcomes, timeouts, retries, HTTP actions against a local server, and pausing a
schedule after consecutive failures. The executor is called directly; no broker is needed for these."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
import time_machine

from echoflow.accounts.models import Organization
from echoflow.events.models import OutboxEvent
from runs.dispatcher import dispatch_tick
from runs.executor import run_execute, run_execute_batch
from runs.models import AttemptOutcome, Run, RunAttempt, RunStatus
from runs.services import run_create_adhoc, schedule_run_now
from schedules.models import Schedule, ScheduleState
from schedules.services import schedule_create, schedule_resume

pytestmark = pytest.mark.django_db


def _schedule(org: Organization, **data: Any) -> Schedule:
    base = {"name": "s", "trigger_kind": "cron", "cron": "0 0 1 1 *", "action_name": "echoflow.noop"}
    return schedule_create(organization=org, data={**base, **data})


def _run_once(schedule: Schedule) -> Run:
    run, _ = schedule_run_now(schedule=schedule)
    run_execute(run_id=run.pk, worker="test-worker")
    run.refresh_from_db()
    return run


def test_an_attempt_over_its_timeout_is_timed_out_then_retried_then_final(org: Organization) -> None:
    schedule = _schedule(
        org,
        action_name="echoflow.sleep",
        payload={"seconds": 10},
        timeout_seconds=1,
        max_attempts=2,
        backoff_seconds=[7],
    )
    start = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    with time_machine.travel(start, tick=True) as traveller:
        run = _run_once(schedule)
        assert run.status == RunStatus.RETRYING
        attempt = RunAttempt.objects.get(run=run, number=1)
        assert attempt.outcome == AttemptOutcome.TIMED_OUT
        assert "timeout of 1 s" in attempt.error
        assert attempt.duration_ms is not None and attempt.duration_ms < 5000
        assert run.next_attempt_at is not None
        traveller.move_to(run.next_attempt_at + timedelta(seconds=1))
        assert dispatch_tick(sender=lambda rows: None).retried == 1
        run_execute(run_id=run.pk, worker="test-worker")
    run.refresh_from_db()
    assert run.status == RunStatus.TIMED_OUT
    assert list(RunAttempt.objects.filter(run=run).values_list("outcome", flat=True)) == ["timed_out", "timed_out"]


def test_a_permanent_failure_is_not_retried(org: Organization) -> None:
    schedule = _schedule(org, action_name="echoflow.fail", payload={"message": "bad input", "permanent": True})
    run = _run_once(schedule)
    assert run.status == RunStatus.FAILED
    assert run.attempts == 1 and "bad input" in run.error


def test_output_is_capped(org: Organization, settings: Any) -> None:
    settings.ECHOFLOW = {**settings.ECHOFLOW, "OUTPUT_MAX_CHARS": 300}
    schedule = _schedule(org, action_name="echoflow.echo", payload={"blob": "x" * 5000})
    run = _run_once(schedule)
    assert run.status == RunStatus.SUCCEEDED
    assert isinstance(run.output, dict)
    assert run.output["note"] == "output capped at 300 characters"
    assert len(run.output["truncated"]) == 300


def test_n_consecutive_failures_pause_the_schedule_and_resume_clears_the_count(org: Organization) -> None:
    schedule = _schedule(org, action_name="echoflow.fail", max_attempts=1, pause_after_failures=2)
    _run_once(schedule)
    schedule.refresh_from_db()
    assert (schedule.state, schedule.consecutive_failures) == (ScheduleState.ACTIVE, 1)
    _run_once(schedule)
    schedule.refresh_from_db()
    assert schedule.state == ScheduleState.PAUSED
    assert schedule.state_note == "paused after 2 consecutive failed runs"
    assert schedule_resume(schedule=schedule)
    schedule.refresh_from_db()
    assert (schedule.state, schedule.consecutive_failures) == (ScheduleState.ACTIVE, 0)


def test_a_success_resets_the_consecutive_failure_count(org: Organization) -> None:
    schedule = _schedule(org, action_name="echoflow.fail", max_attempts=1, pause_after_failures=3)
    _run_once(schedule)
    Schedule.objects.filter(pk=schedule.pk).update(action_name="echoflow.noop", payload={})
    schedule.refresh_from_db()
    _run_once(schedule)
    schedule.refresh_from_db()
    assert schedule.consecutive_failures == 0 and schedule.last_run_status == RunStatus.SUCCEEDED


def test_every_transition_writes_one_event_in_order(org: Organization) -> None:
    schedule = _schedule(org, action_name="echoflow.fail", max_attempts=2, backoff_seconds=[0])
    run = _run_once(schedule)
    dispatch_tick(sender=lambda rows: None)
    run_execute(run_id=run.pk, worker="w")
    types = list(OutboxEvent.objects.filter(run_id=run.pk).order_by("id").values_list("type", flat=True))
    assert types == ["run.queued", "run.started", "run.retrying", "run.queued", "run.started", "run.failed"]
    started = OutboxEvent.objects.filter(run_id=run.pk, type="run.started").first()
    assert started is not None and started.data["worker"] == "test-worker" and "lag_ms" in started.data


# --- HTTP actions against a local server ---------------------------------------------------------------------------
class _Recorder(BaseHTTPRequestHandler):
    planned: list[tuple[int, dict[str, str], bytes]] = []
    received: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        status, headers, payload = type(self).planned.pop(0) if type(self).planned else (200, {}, b"ok")
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_target(settings: Any) -> Iterator[tuple[str, type[_Recorder]]]:
    settings.ECHOFLOW = {**settings.ECHOFLOW, "HTTP_ALLOWED_HOSTS": ["127.0.0.1"]}
    handler = type("Recorder", (_Recorder,), {"planned": [], "received": []})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", handler
    server.shutdown()


def _http_run(org: Organization, url: str, **extra: Any) -> Run:
    run, _ = run_create_adhoc(
        organization=org,
        action_kind="http",
        action_config={"url": url, "headers": {"X-Team": "ops"}},
        payload={"n": 1},
        max_attempts=3,
        **extra,
    )
    run_execute(run_id=run.pk, worker="w")
    run.refresh_from_db()
    return run


def test_http_action_2xx_succeeds_and_is_signed_with_the_org_secret(
    org: Organization, http_target: tuple[str, type[_Recorder]]
) -> None:
    url, server = http_target
    run = _http_run(org, url)
    assert run.status == RunStatus.SUCCEEDED
    headers, body = server.received[0]
    assert json.loads(body)["payload"] == {"n": 1}
    assert headers["x-team"] == "ops"
    assert headers["x-echoflow-trace-id"] == run.trace_id
    expected = hmac.new(
        org.signing_secret.encode(), headers["x-echoflow-timestamp"].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    assert headers["x-echoflow-signature"] == f"sha256={expected}"


def test_http_5xx_retries_and_4xx_does_not(org: Organization, http_target: tuple[str, type[_Recorder]]) -> None:
    url, server = http_target
    server.planned = [(503, {}, b"busy")]
    run = _http_run(org, url)
    assert run.status == RunStatus.RETRYING and "503" in run.error
    server.planned = [(404, {}, b"no such hook")]
    run = _http_run(org, url)
    assert run.status == RunStatus.FAILED and "404" in run.error


def test_http_429_waits_at_least_retry_after(org: Organization, http_target: tuple[str, type[_Recorder]]) -> None:
    url, server = http_target
    server.planned = [(429, {"Retry-After": "120"}, b"slow down")]
    run = _http_run(org, url)
    assert run.status == RunStatus.RETRYING
    attempt = RunAttempt.objects.get(run=run)
    assert run.next_attempt_at is not None and attempt.finished_at is not None
    assert (run.next_attempt_at - attempt.finished_at).total_seconds() >= 119


def test_http_to_loopback_is_refused_unless_allowed(org: Organization) -> None:
    run = _http_run(org, "http://127.0.0.1:9/hook")
    assert run.status == RunStatus.FAILED
    assert "non-public address 127.0.0.1" in run.error


def test_a_connection_error_is_retried(org: Organization, settings: Any) -> None:
    settings.ECHOFLOW = {**settings.ECHOFLOW, "HTTP_ALLOW_PRIVATE": True}
    run = _http_run(org, "http://127.0.0.1:9/closed-port")
    assert run.status == RunStatus.RETRYING
    assert "connection error" in run.error


# --- Several runs in one message (runs.executor.run_execute_batch) ---------------------------------------------------


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """The action ``tests.gate``: runs until the event is set (by the test's give_back)."""
    from runs import actions

    event = threading.Event()

    def wait(ctx: Any) -> dict[str, bool]:
        if not event.wait(30):
            raise RuntimeError("the batch never gave its other runs back")
        return {"waited": True}

    monkeypatch.setitem(actions._REGISTRY, "tests.gate", wait)
    return event


def _queued(org: Organization, *actions: str) -> list[Run]:
    return [
        schedule_run_now(schedule=_schedule(org, name=f"q{i}", action_name=name))[0] for i, name in enumerate(actions)
    ]


def test_a_batch_executes_each_queued_run_once_with_its_own_attempt(org: Organization) -> None:
    first, cancelled, last = _queued(org, "echoflow.echo", "echoflow.noop", "echoflow.echo")
    Run.objects.filter(pk=cancelled.pk).update(status=RunStatus.CANCELLED)
    given: list[list[int]] = []
    statuses = run_execute_batch(run_ids=[first.pk, cancelled.pk, last.pk], worker="w", give_back=given.append)
    assert statuses == [RunStatus.SUCCEEDED, None, RunStatus.SUCCEEDED]
    assert given == []
    assert [RunAttempt.objects.filter(run_id=r.pk).count() for r in (first, cancelled, last)] == [1, 0, 1]
    # A redelivered batch message changes nothing.
    assert run_execute_batch(run_ids=[first.pk, cancelled.pk, last.pk], worker="w", give_back=given.append) == [
        None,
        None,
        None,
    ]
    assert RunAttempt.objects.filter(run_id__in=[first.pk, last.pk]).count() == 2


def test_a_slow_action_gives_the_rest_of_its_batch_back_while_it_runs(
    org: Organization, gate: threading.Event, settings: Any
) -> None:
    settings.ECHOFLOW = {**settings.ECHOFLOW, "RUN_BATCH_SPILL_SECONDS": 0.05}
    slow, second, third = _queued(org, "tests.gate", "echoflow.noop", "echoflow.noop")
    given: list[list[int]] = []

    def give_back(ids: list[int]) -> None:
        given.append(ids)
        gate.set()  # only now may the slow action end: it was given back while the action ran

    statuses = run_execute_batch(run_ids=[slow.pk, second.pk, third.pk], worker="w", give_back=give_back)
    assert statuses == [RunStatus.SUCCEEDED]
    assert given == [[second.pk, third.pk]]
    assert [Run.objects.get(pk=r.pk).status for r in (second, third)] == [RunStatus.QUEUED, RunStatus.QUEUED]
    assert not RunAttempt.objects.filter(run_id__in=[second.pk, third.pk]).exists()


def test_a_batch_past_its_spill_time_runs_its_first_run_and_gives_back_the_rest(
    org: Organization, settings: Any
) -> None:
    settings.ECHOFLOW = {**settings.ECHOFLOW, "RUN_BATCH_SPILL_SECONDS": 0.0}
    runs = _queued(org, "echoflow.noop", "echoflow.noop", "echoflow.noop")
    given: list[list[int]] = []
    assert run_execute_batch(run_ids=[r.pk for r in runs], worker="w", give_back=given.append) == [RunStatus.SUCCEEDED]
    assert given == [[runs[1].pk, runs[2].pk]]


def test_a_batch_that_cannot_give_back_runs_the_rest_itself(org: Organization, settings: Any) -> None:
    settings.ECHOFLOW = {**settings.ECHOFLOW, "RUN_BATCH_SPILL_SECONDS": 0.0}
    runs = _queued(org, "echoflow.noop", "echoflow.noop", "echoflow.noop")
    calls: list[list[int]] = []

    def broker_down(ids: list[int]) -> None:
        calls.append(ids)
        raise ConnectionError("the broker is down")

    statuses = run_execute_batch(run_ids=[r.pk for r in runs], worker="w", give_back=broker_down)
    assert statuses == [RunStatus.SUCCEEDED] * 3
    assert len(calls) == 1  # tried once, not before every run
    assert set(Run.objects.filter(pk__in=[r.pk for r in runs]).values_list("status", flat=True)) == {"succeeded"}


def test_a_stuck_action_gives_the_rest_of_its_batch_back_before_its_process_is_ended(
    org: Organization, gate: threading.Event, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The spill time is longer than the attempt's timeout: only the stuck path can give the rest back.
    settings.ECHOFLOW = {**settings.ECHOFLOW, "RUN_BATCH_SPILL_SECONDS": 600.0}
    monkeypatch.setattr("runs.executor.STOP_GRACE_SECONDS", 0.05)
    stuck_run = schedule_run_now(
        schedule=_schedule(org, name="stuck", action_name="tests.gate", timeout_seconds=1, max_attempts=1)
    )[0]
    rest = _queued(org, "echoflow.noop", "echoflow.noop")
    order: list[str] = []
    try:
        statuses = run_execute_batch(
            run_ids=[stuck_run.pk, *(r.pk for r in rest)],
            worker="w",
            give_back=lambda ids: order.append(f"give back {ids}"),
            on_stuck=lambda: order.append("end the process"),
        )
    finally:
        gate.set()  # let the ignored action's helper thread end
    assert statuses == [RunStatus.TIMED_OUT]
    assert order == [f"give back {[r.pk for r in rest]}", "end the process"]
