"""URLs of the gunicorn scenario 5 (api) times: the project's, plus the run list with DRF's offset pagination.

The comparison route is the production RunViewSet with DRF's usual LimitOffsetPagination instead of the cursor:
a count of the organization's runs on every page, and every row before the page read and skipped. Its queryset is
the one a DRF view usually has (``select_related`` for the schedule's name), whose ``count()`` drops the join and
can be answered from the organization index alone, the cheapest count there is.
"""

from __future__ import annotations

from django.db.models import QuerySet
from django.urls import URLPattern, URLResolver, include, path
from rest_framework.pagination import LimitOffsetPagination

from echoflow.api.views.runs import RunViewSet
from runs.models import Run


class RunOffsetPagination(LimitOffsetPagination):
    default_limit = 50
    max_limit = 500


class RunOffsetViewSet(RunViewSet):
    def get_queryset(self) -> QuerySet[Run]:
        return Run.objects.filter(organization=self.org.organization).select_related("schedule")


urlpatterns: list[URLPattern | URLResolver] = [
    path(
        "bench/offset/runs/",
        RunOffsetViewSet.as_view({"get": "list"}, pagination_class=RunOffsetPagination),
        name="bench-offset-runs",
    ),
    path("", include("echoflow.urls")),
]
