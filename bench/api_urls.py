"""URLs of the gunicorn scenario 5 (api) times: the project's, plus the run list with DRF's offset pagination.

The comparison route is the production RunViewSet with one change, ``pagination_class``: what the list would cost
had the API kept DRF's usual LimitOffsetPagination (a count of the organization's runs on every page, and every
row before the page read and skipped).
"""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, include, path
from rest_framework.pagination import LimitOffsetPagination

from echoflow.api.views.runs import RunViewSet


class RunOffsetPagination(LimitOffsetPagination):
    default_limit = 50
    max_limit = 500


urlpatterns: list[URLPattern | URLResolver] = [
    path(
        "bench/offset/runs/",
        RunViewSet.as_view({"get": "list"}, pagination_class=RunOffsetPagination),
        name="bench-offset-runs",
    ),
    path("", include("echoflow.urls")),
]
