from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, JsonResponse

from runs.selectors import dispatcher_heartbeat_age, dispatcher_is_healthy


def healthz(request: HttpRequest) -> JsonResponse:
    checks: dict[str, object] = {}
    healthy = True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {exc}"
        return JsonResponse({"status": "unhealthy", "checks": checks}, status=503)
    ok, detail = dispatcher_is_healthy()
    age = dispatcher_heartbeat_age()
    checks["dispatcher"] = {
        "ok": ok,
        "detail": detail,
        "heartbeat_age_seconds": age.total_seconds() if age else None,
    }
    healthy = healthy and ok
    return JsonResponse({"status": "ok" if healthy else "unhealthy", "checks": checks}, status=200 if healthy else 503)
