"""/api/v1/metrics/summary (run figures over a window) and /api/v1/alerts/: thin callers of
echoflow.observability.selectors and echoflow.observability.services."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import exceptions, serializers
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from echoflow.accounts.permissions import READ, RUN
from echoflow.api.auth import ORG_PARAM
from echoflow.api.base import ApiViewSet
from echoflow.api.filters import AlertFilter
from echoflow.api.pagination import AlertPagination
from echoflow.api.serializers.observability import (
    AlertSerializer,
    MetricsBreakdownQuerySerializer,
    MetricsBreakdownSerializer,
    MetricsQuerySerializer,
    MetricsSummarySerializer,
    metrics_breakdown_data,
    metrics_summary_data,
)
from echoflow.observability.models import Alert
from echoflow.observability.selectors import alert_as_dict, alerts_list, metrics_breakdown, metrics_summary
from echoflow.observability.services import alert_acknowledge
from schedules.selectors import schedule_list

METRICS_TAG = ["metrics"]
ALERTS_TAG = ["alerts"]
# Parameters every endpoint takes: the organization of a session request, and DRF's format override.
COMMON_PARAMS = frozenset({ORG_PARAM, "format"})
# A misspelled or guessed parameter must not silently answer another question (the default 24 h, the whole org).
PARAM_HINTS = {"by": "the figures per schedule are GET /api/v1/metrics/summary/by-schedule/"}


def _query(request: Request, serializer_class: type[serializers.Serializer[Any]]) -> dict[str, Any]:
    """The validated query string; unknown parameters and bad values are all reported at once, by name."""
    accepted = sorted(serializer_class().fields)
    errors: dict[str, list[str]] = {}
    for name in sorted(set(request.query_params) - set(accepted) - COMMON_PARAMS):
        hint = PARAM_HINTS.get(name)
        message = f"is not a parameter of this endpoint, which takes {', '.join(accepted)}"
        errors[name] = [f"{message}; {hint}" if hint else message]
    serializer = serializer_class(data=request.query_params)
    if not serializer.is_valid():
        errors.update({name: [str(m) for m in messages] for name, messages in serializer.errors.items()})
    if errors:
        raise exceptions.ValidationError(errors)
    return dict(serializer.validated_data)


class MetricsViewSet(ApiViewSet):
    """Run figures of the caller's organization over a time window, read from the rollups."""

    serializer_class = MetricsSummarySerializer
    pagination_class = None
    permission_map = {"summary": frozenset({READ}), "by_schedule": frozenset({READ})}

    @extend_schema(
        tags=METRICS_TAG,
        summary="Figures over a window (default 24 h): the organization's, or one schedule's",
        parameters=[MetricsQuerySerializer],
        responses={200: MetricsSummarySerializer},
    )
    def summary(self, request: Request) -> Response:
        query = _query(request, MetricsQuerySerializer)
        schedule = None
        if query.get("schedule") is not None:
            # Another organization's schedule is as missing as one that never existed: 404.
            schedule = schedule_list(organization=self.org.organization).get(pk=query["schedule"])
        summary = metrics_summary(organization=self.org.organization, window=query["window"], schedule=schedule)
        return Response(metrics_summary_data(summary))

    @extend_schema(
        tags=METRICS_TAG,
        summary="Figures over a window per schedule, the most triggered first",
        parameters=[MetricsBreakdownQuerySerializer],
        responses={200: MetricsBreakdownSerializer},
    )
    def by_schedule(self, request: Request) -> Response:
        query = _query(request, MetricsBreakdownQuerySerializer)
        breakdown = metrics_breakdown(organization=self.org.organization, window=query["window"])
        return Response(metrics_breakdown_data(breakdown, limit=query["limit"]))


@extend_schema_view(
    list=extend_schema(tags=ALERTS_TAG, summary="Alerts: the organization's and the system-wide ones, newest first"),
    retrieve=extend_schema(tags=ALERTS_TAG, summary="Get an alert"),
)
class AlertViewSet(ApiViewSet):
    """Incidents: raised once, open until someone acknowledges them, resolved when their condition clears."""

    serializer_class = AlertSerializer
    queryset = Alert.objects.none()
    pagination_class = AlertPagination
    filter_backends = [DjangoFilterBackend]
    filterset_class = AlertFilter
    permission_map = {
        "list": frozenset({READ}),
        "retrieve": frozenset({READ}),
        # Saying "I am on it" is operating, like retrying or cancelling a run: it changes no definition.
        "acknowledge": frozenset({RUN}),
    }

    def get_queryset(self) -> QuerySet[Alert]:
        if getattr(self, "swagger_fake_view", False):
            return Alert.objects.none()
        return alerts_list(organization=self.org.organization)

    def _data(self, alert: Alert) -> dict[str, Any]:
        return dict(AlertSerializer(alert_as_dict(alert, organization=self.org.organization)).data)

    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response([self._data(alert) for alert in page or []])

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(self._data(self.get_object()))

    @extend_schema(
        tags=ALERTS_TAG,
        summary="Acknowledge an alert: someone is on it (it stays unresolved until its condition clears)",
        request=None,
        responses={200: AlertSerializer},
    )
    @action(detail=True, methods=["post"])
    def acknowledge(self, request: Request, pk: str) -> Response:
        alert = self.get_object()
        if alert.organization_id is None:
            raise exceptions.PermissionDenied(
                f"Alert {alert.pk} is system-wide ({alert.rule}): it concerns every organization, so an operator "
                "acknowledges it in the admin, not one organization through the API."
            )
        return Response(self._data(alert_acknowledge(alert=alert, user=request.user)))
