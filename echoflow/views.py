"""Probes: ``/healthz`` for load balancers and orchestrators, ``/metrics`` for Prometheus."""

from __future__ import annotations

import hmac
import logging

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_safe

from echoflow.observability.health import health_check
from echoflow.observability.metrics import metrics_exposition
from echoflow.observability.services import dispatcher_alert_check

logger = logging.getLogger(__name__)


@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the database, the broker and the dispatcher's heartbeat are fine, else 503; the body says which."""
    report = health_check()
    if report.checks.get("database") == "ok":
        # Probes keep coming when beat (which drives the periodic alert check) is the thing that stopped.
        try:
            dispatcher_alert_check()
        except Exception:
            logger.exception("healthz: the dispatcher alert check failed")
    return JsonResponse(report.as_dict(), status=200 if report.healthy else 503)


@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text (or OpenMetrics when asked); with METRICS_TOKEN set, only for ``Bearer <token>``."""
    token = settings.METRICS_TOKEN
    if token and not hmac.compare_digest(request.headers.get("Authorization", "").encode(), f"Bearer {token}".encode()):
        response = HttpResponse("authentication required\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    body, content_type = metrics_exposition(request.headers.get("Accept"))
    response = HttpResponse(body, content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response
