"""/api/v1/orgs/current/ (with members and roles), /api/v1/tokens/ and /api/v1/audit/."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from echoflow.accounts.models import ROLE_PERMISSIONS, ApiToken, Membership, Role
from echoflow.accounts.permissions import READ
from echoflow.accounts.services import (
    membership_add,
    membership_remove,
    membership_set,
    organization_update,
    token_create,
    token_revoke,
)
from echoflow.api.auth import ADMIN, SESSION
from echoflow.api.base import ApiViewSet
from echoflow.api.filters import AuditFilter
from echoflow.api.pagination import NewestFirstPagination
from echoflow.api.serializers.accounts import (
    AuditEntrySerializer,
    MemberCreateSerializer,
    MemberSerializer,
    MemberUpdateSerializer,
    OrganizationSerializer,
    OrganizationUpdateSerializer,
    RoleSerializer,
    TokenCreatedSerializer,
    TokenCreateSerializer,
    TokenSerializer,
)
from echoflow.audit.models import AuditEntry

MEMBERSHIP = frozenset[str]()  # being a member of the organization is enough
ORG_TAG = ["organization"]


class CurrentOrganizationViewSet(ApiViewSet):
    """The organization the request acts in (the token's, or the one a session user selected)."""

    serializer_class = OrganizationSerializer
    permission_map = {"retrieve": MEMBERSHIP, "partial_update": frozenset({ADMIN})}

    def _response(self) -> Response:
        context = {"role": self.org.membership.role, "permissions": self.org.permissions}
        return Response(OrganizationSerializer(self.org.organization, context=context).data)

    @extend_schema(tags=ORG_TAG, summary="The caller's current organization, role and permissions")
    def retrieve(self, request: Request) -> Response:
        return self._response()

    @extend_schema(
        tags=ORG_TAG,
        summary="Rename the organization or change its run limit (admin)",
        request=OrganizationUpdateSerializer,
        responses={200: OrganizationSerializer},
    )
    def partial_update(self, request: Request) -> Response:
        organization_update(organization=self.org.organization, data=self.body())
        return self._response()


@extend_schema_view(
    list=extend_schema(tags=ORG_TAG, summary="Members and their roles (admin)"),
    retrieve=extend_schema(tags=ORG_TAG, summary="A member (admin)"),
    destroy=extend_schema(tags=ORG_TAG, summary="Remove a member; their tokens are revoked (admin)"),
)
class MemberViewSet(ApiViewSet):
    """Who belongs to the organization, with which role. Admins only."""

    serializer_class = MemberSerializer
    queryset = Membership.objects.none()
    pagination_class = None
    permission_map = {
        action: frozenset({ADMIN}) for action in ("list", "retrieve", "create", "partial_update", "destroy")
    }

    def get_queryset(self) -> QuerySet[Membership]:
        if getattr(self, "swagger_fake_view", False):
            return Membership.objects.none()
        return (
            Membership.objects.filter(organization=self.org.organization)
            .select_related("user")
            .order_by("user__username", "pk")
        )

    def list(self, request: Request) -> Response:
        return Response(MemberSerializer(self.get_queryset(), many=True).data)

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(MemberSerializer(self.get_object()).data)

    @extend_schema(
        tags=ORG_TAG,
        summary="Add an existing user with a role (admin)",
        request=MemberCreateSerializer,
        responses={201: MemberSerializer},
    )
    def create(self, request: Request) -> Response:
        data = self.body()
        membership = membership_add(
            organization=self.org.organization, username=data.get("username"), role=data.get("role")
        )
        return Response(MemberSerializer(membership).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        tags=ORG_TAG,
        summary="Change a member's role (admin)",
        request=MemberUpdateSerializer,
        responses={200: MemberSerializer},
    )
    def partial_update(self, request: Request, pk: str) -> Response:
        membership = self.get_object()
        role = self.body().get("role", "")
        updated = membership_set(organization=self.org.organization, user=membership.user, role=str(role))
        return Response(MemberSerializer(updated).data)

    def destroy(self, request: Request, pk: str) -> Response:
        membership_remove(membership=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class RoleViewSet(ApiViewSet):
    """The roles and the permissions each grants. Admins only."""

    serializer_class = RoleSerializer
    pagination_class = None
    permission_map = {"list": frozenset({ADMIN})}

    @extend_schema(tags=ORG_TAG, summary="Roles and the permissions each grants (admin)")
    def list(self, request: Request) -> Response:
        return Response([{"role": role, "permissions": sorted(ROLE_PERMISSIONS[role])} for role in Role.values])


@extend_schema_view(
    list=extend_schema(tags=["tokens"], summary="API tokens: your own (an admin sees the organization's)"),
    retrieve=extend_schema(tags=["tokens"], summary="An API token"),
)
class TokenViewSet(ApiViewSet):
    """API tokens for programs. The secret is shown once, at creation; only its hash is stored."""

    serializer_class = TokenSerializer
    queryset = ApiToken.objects.none()
    pagination_class = NewestFirstPagination
    permission_map = {
        "list": MEMBERSHIP,
        "retrieve": MEMBERSHIP,
        "revoke": MEMBERSHIP,
        "create": frozenset({SESSION}),
    }

    def get_queryset(self) -> QuerySet[ApiToken]:
        if getattr(self, "swagger_fake_view", False):
            return ApiToken.objects.none()
        tokens = ApiToken.objects.filter(organization=self.org.organization).select_related("user")
        return tokens if self.org.is_admin else tokens.filter(user_id=self.org.membership.user_id)

    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(TokenSerializer(page, many=True).data)

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(TokenSerializer(self.get_object()).data)

    @extend_schema(
        tags=["tokens"],
        summary="Create a token for yourself (signed-in users only); its secret is shown once",
        request=TokenCreateSerializer,
        responses={201: TokenCreatedSerializer},
    )
    def create(self, request: Request) -> Response:
        data = self.body()
        user = request.user
        assert isinstance(user, AbstractBaseUser)  # authenticated: OrgPermission let the request through
        token, plaintext = token_create(
            user=user,
            organization=self.org.organization,
            name=data.get("name", ""),
            scopes=data.get("scopes") or [],
            grantable=self.org.permissions,
        )
        body = TokenCreatedSerializer(token, context={"plaintext": plaintext}).data
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(tags=["tokens"], summary="Revoke a token (for good)", request=None, responses={200: TokenSerializer})
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk: str) -> Response:
        token = self.get_object()
        token_revoke(token=token)
        return Response(TokenSerializer(token).data)


@extend_schema_view(list=extend_schema(tags=["audit"], summary="The organization's audit log, newest first"))
class AuditViewSet(ApiViewSet):
    """Every change in the organization: who, what, when, from which request."""

    serializer_class = AuditEntrySerializer
    queryset = AuditEntry.objects.none()
    pagination_class = NewestFirstPagination
    filter_backends = [DjangoFilterBackend]
    filterset_class = AuditFilter
    permission_map = {"list": frozenset({READ})}

    def get_queryset(self) -> QuerySet[AuditEntry]:
        if getattr(self, "swagger_fake_view", False):
            return AuditEntry.objects.none()
        return AuditEntry.objects.filter(organization=self.org.organization)

    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(AuditEntrySerializer(page, many=True).data)
