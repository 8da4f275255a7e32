"""/api/v1/schedules/: thin callers of schedules.services, runs.services and runs.backfill."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models import QuerySet
from django.utils import timezone
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import exceptions, status
from rest_framework.decorators import action
from rest_framework.filters import OrderingFilter
from rest_framework.request import Request
from rest_framework.response import Response

from echoflow.accounts.permissions import DELETE, READ, RUN, WRITE
from echoflow.api.base import ApiViewSet
from echoflow.api.errors import Conflict
from echoflow.api.filters import ScheduleFilter, ScheduleRunFilter
from echoflow.api.headers import IDEMPOTENCY_KEY_PARAMETER, IF_MATCH_PARAMETER, expected_version, idempotency_key
from echoflow.api.pagination import NewestFirstPagination, SchedulePagination
from echoflow.api.serializers.runs import RunSerializer
from echoflow.api.serializers.schedules import (
    BackfillResultSerializer,
    BackfillSerializer,
    DisableSerializer,
    PreviewResultSerializer,
    PreviewSerializer,
    ScheduleCreateSerializer,
    ScheduleSerializer,
    ScheduleUpdateSerializer,
)
from runs.backfill import schedule_backfill
from runs.models import Run
from runs.selectors import run_list
from runs.services import schedule_run_now
from schedules.models import Schedule, ScheduleState
from schedules.selectors import schedule_preview, schedules_of_organization
from schedules.services import schedule_create, schedule_delete, schedule_pause, schedule_resume, schedule_update
from schedules.triggers import trigger_validate, zone_get
from schedules.validation import FIELDS

TAG = ["schedules"]


def _put_defaults() -> dict[str, Any]:
    """PUT replaces the whole definition: a field left out goes back to its default."""
    fields = [Schedule._meta.get_field(name) for name in FIELDS]
    return {field.name: field.get_default() for field in fields if isinstance(field, models.Field)}


def _schedule_response(schedule: Schedule, code: int = status.HTTP_200_OK) -> Response:
    return Response(ScheduleSerializer(schedule).data, status=code, headers={"ETag": f'"{schedule.version}"'})


@extend_schema_view(
    list=extend_schema(tags=TAG, summary="List schedules"),
    retrieve=extend_schema(tags=TAG, summary="Get a schedule", responses={200: ScheduleSerializer}),
    destroy=extend_schema(tags=TAG, summary="Delete a schedule (its runs are kept)"),
)
class ScheduleViewSet(ApiViewSet):
    """Schedules of the caller's organization: when something should happen, and what."""

    serializer_class = ScheduleSerializer
    queryset = Schedule.objects.none()
    pagination_class = SchedulePagination
    filter_backends = [DjangoFilterBackend, OrderingFilter]
    filterset_class = ScheduleFilter
    ordering_fields = ["name", "created_at", "updated_at", "id"]
    permission_map = {
        "list": frozenset({READ}),
        "retrieve": frozenset({READ}),
        "runs": frozenset({READ}),
        "preview": frozenset({READ}),
        "create": frozenset({WRITE}),
        "update": frozenset({WRITE}),
        "partial_update": frozenset({WRITE}),
        "enable": frozenset({WRITE}),
        "disable": frozenset({WRITE}),
        "destroy": frozenset({DELETE}),
        "run_now": frozenset({RUN}),
        "backfill": frozenset({RUN}),
    }

    def get_queryset(self) -> QuerySet[Schedule]:
        if getattr(self, "swagger_fake_view", False):  # schema generation: no request, no organization
            return Schedule.objects.none()
        return schedules_of_organization(organization=self.org.organization)

    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(ScheduleSerializer(page, many=True).data)

    @extend_schema(
        tags=TAG, summary="Create a schedule", request=ScheduleCreateSerializer, responses={201: ScheduleSerializer}
    )
    def create(self, request: Request) -> Response:
        schedule = schedule_create(organization=self.org.organization, data=self.body(), user=request.user)
        return _schedule_response(schedule, status.HTTP_201_CREATED)

    def retrieve(self, request: Request, pk: str) -> Response:
        return _schedule_response(self.get_object())

    @extend_schema(
        tags=TAG,
        summary="Replace a schedule's definition (fields left out go back to their defaults)",
        request=ScheduleUpdateSerializer,
        responses={200: ScheduleSerializer},
        parameters=[IF_MATCH_PARAMETER],
    )
    def update(self, request: Request, pk: str) -> Response:
        return self._update(request, partial=False)

    @extend_schema(
        tags=TAG,
        summary="Change some fields of a schedule",
        request=ScheduleUpdateSerializer,
        responses={200: ScheduleSerializer},
        parameters=[IF_MATCH_PARAMETER],
    )
    def partial_update(self, request: Request, pk: str) -> Response:
        return self._update(request, partial=True)

    def _update(self, request: Request, *, partial: bool) -> Response:
        schedule = self.get_object()
        data = self.body()
        version = expected_version(request, data)
        if not partial:
            data = {**_put_defaults(), **data}
        updated, _ = schedule_update(schedule=schedule, data=data, expected_version=version)
        return _schedule_response(updated)

    def destroy(self, request: Request, pk: str) -> Response:
        schedule_delete(schedule=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        tags=TAG, summary="Enable (resume) a paused schedule", request=None, responses={200: ScheduleSerializer}
    )
    @action(detail=True, methods=["post"])
    def enable(self, request: Request, pk: str) -> Response:
        schedule = self.get_object()
        if not schedule_resume(schedule=schedule) and schedule.state != ScheduleState.ACTIVE:
            raise Conflict(f"The schedule is {schedule.state}; only a paused schedule can be enabled.")
        return _schedule_response(schedule)

    @extend_schema(
        tags=TAG, summary="Disable (pause) a schedule", request=DisableSerializer, responses={200: ScheduleSerializer}
    )
    @action(detail=True, methods=["post"])
    def disable(self, request: Request, pk: str) -> Response:
        schedule = self.get_object()
        serializer = DisableSerializer(data=self.body())
        serializer.is_valid(raise_exception=True)
        paused = schedule_pause(schedule=schedule, note=serializer.validated_data["note"])
        if not paused and schedule.state != ScheduleState.PAUSED:  # pausing twice is what was wanted anyway
            raise Conflict(f"The schedule is {schedule.state}; only an active schedule can be disabled.")
        return _schedule_response(schedule)

    @extend_schema(
        tags=TAG,
        summary="Queue a run now, outside the schedule's slots",
        request=None,
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
        responses={201: RunSerializer, 200: RunSerializer},
    )
    @action(detail=True, methods=["post"], url_path="run-now")
    def run_now(self, request: Request, pk: str) -> Response:
        schedule = self.get_object()
        key = idempotency_key(request)
        run, created = schedule_run_now(schedule=schedule, idempotency_key=key)
        if not created and run.schedule_id != schedule.pk:
            raise Conflict("This Idempotency-Key was already used to run another schedule; use a new key.")
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return Response(RunSerializer(run).data, status=code)

    @extend_schema(
        tags=TAG,
        summary="Create runs for the schedule's past slots in [from, to)",
        request=BackfillSerializer,
        responses={200: BackfillResultSerializer},
    )
    @action(detail=True, methods=["post"])
    def backfill(self, request: Request, pk: str) -> Response:
        schedule = self.get_object()
        serializer = BackfillSerializer(data=self.body())
        serializer.is_valid(raise_exception=True)
        values = serializer.validated_data
        result = schedule_backfill(schedule=schedule, start=values["from"], end=values["to"], dry_run=values["dry_run"])
        return Response(BackfillResultSerializer(result).data)

    @extend_schema(tags=TAG, summary="The schedule's runs, newest first", responses={200: RunSerializer(many=True)})
    @action(
        detail=True,
        methods=["get"],
        pagination_class=NewestFirstPagination,
        filter_backends=[DjangoFilterBackend],
        filterset_class=ScheduleRunFilter,
        queryset=Run.objects.none(),  # tells the schema (and the filter backend) these are runs
    )
    def runs(self, request: Request, pk: str) -> Response:
        schedule = self.get_object()
        runs = run_list(organization_id=self.org.organization.pk).filter(schedule=schedule)
        page = self.paginate_queryset(self.filter_queryset(runs))
        return self.get_paginated_response(RunSerializer(page, many=True).data)

    @extend_schema(
        tags=TAG,
        summary="The next fire instants of an unsaved trigger",
        request=PreviewSerializer,
        responses={200: PreviewResultSerializer},
    )
    @action(detail=False, methods=["post"])
    def preview(self, request: Request) -> Response:
        serializer = PreviewSerializer(data=self.body())
        serializer.is_valid(raise_exception=True)
        values = serializer.validated_data
        after = values["after"] or None
        if after is not None and after.tzinfo is None:
            raise exceptions.ValidationError(
                {"after": ["needs a UTC offset or time zone (e.g. 2026-10-01T08:00:00+02:00)"]}
            )
        after = after or timezone.now()
        # The preview command's own arithmetic: validate, then list the slots strictly after ``after``.
        trigger = trigger_validate(
            kind=values["trigger_kind"],
            timezone=values["timezone"],
            cron=values["cron"],
            interval_seconds=values["interval_seconds"],
            run_at=values["run_at"],
            start_at=values["start_at"],
            end_at=values["end_at"],
            anchor=after.replace(microsecond=0),
        )
        zone = zone_get(trigger.timezone)
        slots = schedule_preview(trigger=trigger, count=values["count"], after=after)
        return Response(
            {
                "timezone": trigger.timezone,
                "description": trigger.describe(),
                "slots": [slot.astimezone(zone).isoformat() for slot in slots],
            }
        )
