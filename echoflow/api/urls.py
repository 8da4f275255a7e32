"""/api/v1/ (the API), /api/schema/ (OpenAPI 3) and /api/docs/ (Swagger UI)."""

from django.urls import URLPattern, URLResolver, include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from echoflow.api.views import api_not_found
from echoflow.api.views.accounts import (
    AuditViewSet,
    CurrentOrganizationViewSet,
    MemberViewSet,
    RoleViewSet,
    TokenViewSet,
)
from echoflow.api.views.observability import AlertViewSet, MetricsViewSet
from echoflow.api.views.runs import RunViewSet
from echoflow.api.views.schedules import ScheduleViewSet

router = SimpleRouter()
# Both /runs/7/report and /runs/7/report/ work: an API client should not get a redirect that drops its POST body.
router.trailing_slash = "/?"
router.register("schedules", ScheduleViewSet, basename="schedule")
router.register("runs", RunViewSet, basename="run")
router.register("audit", AuditViewSet, basename="audit")
router.register("alerts", AlertViewSet, basename="alert")
router.register("tokens", TokenViewSet, basename="token")
router.register("orgs/current/members", MemberViewSet, basename="member")
router.register("orgs/current/roles", RoleViewSet, basename="role")

current_org = CurrentOrganizationViewSet.as_view({"get": "retrieve", "patch": "partial_update"})
# One object each, not a collection: routed by hand, so that neither is described as a list.
metrics_summary = MetricsViewSet.as_view({"get": "summary"})
metrics_by_schedule = MetricsViewSet.as_view({"get": "by_schedule"})

v1: list[URLPattern | URLResolver] = [
    re_path(r"^orgs/current/?$", current_org, name="org-current"),
    re_path(r"^metrics/summary/?$", metrics_summary, name="metrics-summary"),
    re_path(r"^metrics/summary/by-schedule/?$", metrics_by_schedule, name="metrics-by-schedule"),
    *router.urls,
]

urlpatterns: list[URLPattern | URLResolver] = [
    path("v1/", include((v1, "api"), namespace="v1")),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    # Anything else under /api/ is a JSON 404 in the API's envelope, not the site's HTML page.
    re_path(r"^.*$", api_not_found),
]
