from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse

from echoflow.api.errors import envelope


def api_not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Any path under /api/ that names no endpoint."""
    return JsonResponse(envelope(f"Not found: no API endpoint at {request.path[:200]}.", "not_found"), status=404)
