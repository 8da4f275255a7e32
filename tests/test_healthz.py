"""/healthz in JSON (database, broker, dispatcher heartbeat age; 503 when unhealthy), and check_scheduler, which
uses the same checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from echoflow.observability.models import Alert, AlertRule
from runs.models import DispatcherHeartbeat

pytestmark = [pytest.mark.django_db, pytest.mark.redis]


NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _beat(seconds_ago: float, *, tick_ms: int = 12) -> datetime:
    beat_at = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    DispatcherHeartbeat.objects.update_or_create(
        name="dispatcher", defaults={"beat_at": beat_at, "last_tick_ms": tick_ms, "hostname": "beat-1"}
    )
    return beat_at


def test_healthy_answers_200_with_every_check(client: Client) -> None:
    with time_machine.travel(NOW, tick=False):
        beat_at = _beat(1.5)
        response = client.get("/healthz")
        head = client.head("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    checks = body["checks"]
    assert checks["database"] == "ok"
    assert checks["broker"] == {"ok": True, "detail": "Redis answers"}
    dispatcher = checks["dispatcher"]
    assert (dispatcher["ok"], dispatcher["detail"]) == (True, "the dispatcher ticked 1.5 s ago")
    assert dispatcher["heartbeat_age_seconds"] == 1.5
    assert (dispatcher["limit_seconds"], dispatcher["last_tick_ms"], dispatcher["hostname"]) == (30, 12, "beat-1")
    assert dispatcher["last_heartbeat"] == beat_at.isoformat()
    assert head.status_code == 200


def test_a_stale_heartbeat_is_503_and_raises_the_dispatcher_alert(client: Client) -> None:
    _beat(95)
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    assert body["checks"]["database"] == "ok" and body["checks"]["broker"]["ok"] is True
    assert body["checks"]["dispatcher"]["ok"] is False
    assert body["checks"]["dispatcher"]["detail"] == "the dispatcher's last heartbeat was 95 s ago (limit 30 s)"
    # Probes keep coming when beat stopped: /healthz raises the alert too, once.
    client.get("/healthz")
    assert Alert.objects.filter(rule=AlertRule.DISPATCHER_STALLED, resolved_at__isnull=True).count() == 1


def test_a_dispatcher_that_never_ran_is_503(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["dispatcher"] == {
        "ok": False,
        "detail": "the dispatcher has never run",
        "heartbeat_age_seconds": None,
        "limit_seconds": 30.0,
    }


def test_an_unreachable_broker_is_503(client: Client, settings: Any) -> None:
    _beat(1)
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    response = client.get("/healthz")
    assert response.status_code == 503
    broker = response.json()["checks"]["broker"]
    assert broker["ok"] is False and broker["detail"].startswith("Redis does not answer")


def test_check_scheduler_uses_the_same_checks(settings: Any) -> None:
    out = StringIO()
    with time_machine.travel(NOW, tick=False):
        _beat(2)
        call_command("check_scheduler", stdout=out)
    assert out.getvalue() == "the dispatcher ticked 2.0 s ago\n"

    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    with pytest.raises(CommandError) as error:
        call_command("check_scheduler")
    assert error.value.returncode == 1
    assert str(error.value).startswith("broker: Redis does not answer")

    settings.CELERY_BROKER_URL = settings.REDIS_URL
    _beat(50)
    with pytest.raises(CommandError) as error:
        call_command("check_scheduler", "--max-age", "40")
    assert str(error.value) == "the dispatcher's last heartbeat was 50 s ago (limit 40 s)"
