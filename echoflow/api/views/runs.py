"""/api/v1/runs/: thin callers of runs.services and runs.report."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from echoflow.accounts.permissions import READ, RUN, WRITE
from echoflow.api.base import ApiViewSet
from echoflow.api.errors import Conflict
from echoflow.api.filters import RunFilter
from echoflow.api.headers import IDEMPOTENCY_KEY_PARAMETER, idempotency_key
from echoflow.api.pagination import NewestFirstPagination
from echoflow.api.serializers.runs import (
    CancelSerializer,
    ReportSerializer,
    RunCreateSerializer,
    RunDetailSerializer,
    RunSerializer,
)
from runs.models import Run
from runs.report import run_report
from runs.selectors import run_list
from runs.services import run_cancel, run_create_adhoc, run_retry

TAG = ["runs"]


def _detail(run: Run, code: int = status.HTTP_200_OK) -> Response:
    """The run as it is now in the database (after a change), with its attempts."""
    fresh = run_list(organization_id=run.organization_id).prefetch_related("attempt_log").get(pk=run.pk)
    return Response(RunDetailSerializer(fresh).data, status=code)


@extend_schema_view(
    list=extend_schema(tags=TAG, summary="List runs, newest first"),
    retrieve=extend_schema(tags=TAG, summary="Get a run with its attempts", responses={200: RunDetailSerializer}),
)
class RunViewSet(ApiViewSet):
    """Runs of the caller's organization: one occurrence of a schedule, or one ad-hoc execution."""

    serializer_class = RunSerializer
    queryset = Run.objects.none()
    pagination_class = NewestFirstPagination
    filter_backends = [DjangoFilterBackend]
    filterset_class = RunFilter
    permission_map = {
        "list": frozenset({READ}),
        "retrieve": frozenset({READ}),
        # An ad-hoc run says what to execute, not only when: it takes what creating a schedule takes, and run.
        "create": frozenset({WRITE, RUN}),
        "retry": frozenset({RUN}),
        "cancel": frozenset({RUN}),
        "report": frozenset({RUN}),
    }

    def get_queryset(self) -> QuerySet[Run]:
        if getattr(self, "swagger_fake_view", False):
            return Run.objects.none()
        runs = run_list(organization_id=self.org.organization.pk)
        # A GET reads the run once, with its attempts; the other actions re-read it after their change (_detail).
        return runs.prefetch_related("attempt_log") if self.action == "retrieve" else runs

    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(RunSerializer(page, many=True).data)

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(RunDetailSerializer(self.get_object()).data)

    @extend_schema(
        tags=TAG,
        summary="Run an action once, now, without a schedule",
        request=RunCreateSerializer,
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
        responses={201: RunDetailSerializer, 200: RunDetailSerializer},
    )
    def create(self, request: Request) -> Response:
        serializer = RunCreateSerializer(data=self.body())
        serializer.is_valid(raise_exception=True)
        values: dict[str, Any] = dict(serializer.validated_data)
        run, created = run_create_adhoc(
            organization=self.org.organization, idempotency_key=idempotency_key(request), **values
        )
        if not created:
            asked = (values["action_kind"], values["action_name"], values["action_config"], values["payload"] or {})
            if (run.action_kind, run.action_name, run.action_config, run.payload) != asked:
                raise Conflict("This Idempotency-Key was already used for a different run; use a new key.")
        return _detail(run, status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(
        tags=TAG,
        summary="Retry a failed, timed-out or cancelled run",
        request=None,
        responses={200: RunDetailSerializer},
    )
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str) -> Response:
        return _detail(run_retry(run=self.get_object()))

    @extend_schema(tags=TAG, summary="Cancel a run", request=CancelSerializer, responses={200: RunDetailSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        run = self.get_object()
        serializer = CancelSerializer(data=self.body())
        serializer.is_valid(raise_exception=True)
        return _detail(run_cancel(run=run, reason=serializer.validated_data["reason"]))

    @extend_schema(
        tags=TAG,
        summary="Report the outcome of a running event run (for external executors)",
        request=ReportSerializer,
        responses={200: RunDetailSerializer},
    )
    @action(detail=True, methods=["post"])
    def report(self, request: Request, pk: str) -> Response:
        run = self.get_object()
        serializer = ReportSerializer(data=self.body())
        serializer.is_valid(raise_exception=True)
        run, _ = run_report(run=run, **serializer.validated_data)
        return _detail(run)
