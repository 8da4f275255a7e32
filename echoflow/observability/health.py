"""One health check for ``/healthz`` and ``manage.py check_scheduler``: database, broker, dispatcher heartbeat."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from runs.models import DispatcherHeartbeat

BROKER_TIMEOUT_SECONDS = 2.0


@dataclass
class HealthReport:
    healthy: bool
    checks: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"status": "ok" if self.healthy else "unhealthy", "checks": self.checks}


def database_check() -> tuple[bool, str]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:
        return False, f"error: {exc}"
    return True, "ok"


def broker_check() -> tuple[bool, str]:
    """Can this process reach the Celery broker? Redis is pinged; the embedded filesystem broker's folders must be
    writable; other transports are asked to connect."""
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return True, "not used (tasks run eagerly)"
    url = str(settings.CELERY_BROKER_URL)
    scheme = url.split(":", 1)[0].lower()
    if scheme in {"redis", "rediss", "unix"}:
        client = redis.Redis.from_url(
            url, socket_timeout=BROKER_TIMEOUT_SECONDS, socket_connect_timeout=BROKER_TIMEOUT_SECONDS
        )
        try:
            client.ping()
        except redis.RedisError as exc:
            return False, f"Redis does not answer: {exc}"
        finally:
            client.close()
        return True, "Redis answers"
    if scheme == "filesystem":
        options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
        folders = [Path(str(options[k])) for k in ("data_folder_in", "processed_folder") if k in options]
        unwritable = [str(f) for f in folders if not (f.is_dir() and os.access(f, os.W_OK))]
        if unwritable:
            return False, f"broker folder not writable: {', '.join(unwritable)}"
        return True, "filesystem broker folders writable"
    from echoflow.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=int(BROKER_TIMEOUT_SECONDS))
    except Exception as exc:
        return False, f"cannot connect: {exc}"
    return True, "connected"


def dispatcher_check(*, max_age: float | None = None, now: datetime | None = None) -> tuple[bool, str, dict[str, Any]]:
    """The dispatcher is healthy when its last tick is at most ``max_age`` seconds old (ECHOFLOW_HEARTBEAT_STALE)."""
    limit = float(settings.ECHOFLOW["HEARTBEAT_STALE_SECONDS"]) if max_age is None else max_age
    beat = DispatcherHeartbeat.objects.filter(name="dispatcher").first()
    info: dict[str, Any] = {"heartbeat_age_seconds": None, "limit_seconds": limit}
    if beat is None:
        return False, "the dispatcher has never run", info
    seconds = ((now or timezone.now()) - beat.beat_at).total_seconds()
    info.update(
        heartbeat_age_seconds=round(seconds, 3),
        last_heartbeat=beat.beat_at.isoformat(),
        last_tick_ms=beat.last_tick_ms,
        hostname=beat.hostname,
    )
    if seconds > limit:
        return False, f"the dispatcher's last heartbeat was {seconds:.0f} s ago (limit {limit:g} s)", info
    return True, f"the dispatcher ticked {seconds:.1f} s ago", info


def health_check(*, max_heartbeat_age: float | None = None, now: datetime | None = None) -> HealthReport:
    """Database first (nothing else can be read without it), then broker and dispatcher heartbeat."""
    report = HealthReport(healthy=True)
    ok, detail = database_check()
    report.checks["database"] = detail
    if not ok:
        report.healthy = False
        report.problems.append(f"database {detail}")
        return report
    ok, detail = broker_check()
    report.checks["broker"] = {"ok": ok, "detail": detail}
    if not ok:
        report.healthy = False
        report.problems.append(f"broker: {detail}")
    ok, detail, info = dispatcher_check(max_age=max_heartbeat_age, now=now)
    report.checks["dispatcher"] = {"ok": ok, "detail": detail, **info}
    if not ok:
        report.healthy = False
        report.problems.append(detail)
    return report
