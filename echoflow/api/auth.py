"""Who is calling, in which organization, with which permissions.

Programs send ``Authorization: Bearer ef_<prefix>_<secret>``: the token fixes the user and the organization, and
its permissions are its user's role there narrowed to the token's scopes. People on the web page use their
session (with CSRF); their organization is the one named by the ``X-EchoFlow-Org`` header or the ``org`` query
parameter, else their first one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from echoflow.accounts.models import ALL_PERMISSIONS, ROLE_PERMISSIONS, ApiToken, Membership, Organization, Role
from echoflow.accounts.services import TokenError, token_authenticate

ORG_HEADER = "X-EchoFlow-Org"
ORG_PARAM = "org"
_SLUG = re.compile(r"^[-a-zA-Z0-9_]{1,100}$")
# Markers in a view's permission_map beyond the four permissions: the organization's admin role (members,
# roles), and a person's session (an API token must not mint tokens: a leaked one could outlive its revocation).
ADMIN = "org:admin"
SESSION = "auth:session"


class BearerTokenAuthentication(BaseAuthentication):
    """``Authorization: Bearer <token>``. Any other scheme is left to the next authenticator."""

    def authenticate(self, request: Request) -> tuple[AbstractBaseUser, ApiToken] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        credentials = credentials.strip()
        if not credentials:
            raise exceptions.AuthenticationFailed("The Authorization header has no token after 'Bearer'.")
        try:
            token = token_authenticate(plaintext=credentials)
        except TokenError as exc:
            raise exceptions.AuthenticationFailed(f"{str(exc).capitalize()}.") from None
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer 401 (not 403) to a request without credentials.
        return 'Bearer realm="api"'


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "echoflow.api.auth.BearerTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return build_bearer_security_scheme_object(header_name="Authorization", token_prefix="Bearer")


@dataclass(frozen=True)
class OrgContext:
    organization: Organization
    membership: Membership
    permissions: frozenset[str]
    token: ApiToken | None

    @property
    def is_admin(self) -> bool:
        return self.membership.role == Role.ADMIN and self.permissions == ALL_PERMISSIONS


def _no_such_org(slug: str) -> exceptions.NotFound:
    # The same answer whether the organization does not exist or is somebody else's.
    return exceptions.NotFound(f"No organization {slug!r} is available to you.")


def _requested_slug(request: Request) -> str | None:
    slug = request.META.get("HTTP_X_ECHOFLOW_ORG") or request.query_params.get(ORG_PARAM)
    if slug is None or slug == "":
        return None
    if not _SLUG.match(slug):
        raise exceptions.ValidationError({ORG_PARAM: ["is not an organization slug (letters, digits, - and _)"]})
    return slug


def _resolve(request: Request) -> OrgContext:
    user_id = request.user.pk
    assert user_id is not None  # only authenticated requests get here
    slug = _requested_slug(request)
    token = request.auth if isinstance(request.auth, ApiToken) else None
    if token is not None:
        if slug is not None and slug != token.organization.slug:
            raise _no_such_org(slug)
        membership = Membership.objects.filter(organization_id=token.organization_id, user_id=user_id).first()
        if membership is None:
            raise exceptions.AuthenticationFailed("The token's user is no longer a member of its organization.")
        membership.organization = token.organization
        return OrgContext(token.organization, membership, token.effective_permissions(membership.role), token)
    memberships = Membership.objects.select_related("organization").filter(user_id=user_id)
    if slug is not None:
        membership = memberships.filter(organization__slug=slug).first()
        if membership is None:
            raise _no_such_org(slug)
    else:
        membership = memberships.order_by("organization__name", "organization_id").first()
        if membership is None:
            raise exceptions.PermissionDenied("You are not a member of any organization; ask an admin to add you.")
    return OrgContext(membership.organization, membership, ROLE_PERMISSIONS[membership.role], None)


def org_context(request: Request) -> OrgContext:
    """The current organization of an authenticated request (resolved once, then cached on the request)."""
    cached: OrgContext | None = getattr(request, "_echoflow_org", None)
    if cached is None:
        cached = _resolve(request)
        request._echoflow_org = cached  # type: ignore[attr-defined]
    return cached


def _describe(permissions: frozenset[str]) -> str:
    return ", ".join(sorted(permissions)) or "nothing"


class OrgPermission(BasePermission):
    """Each view maps its actions to the permissions they need (``permission_map``); a missing one is a 403 that
    names it. An anonymous request is a 401 (DRF turns a refusal without credentials into NotAuthenticated)."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        context = org_context(request)
        action = getattr(view, "action", None)
        if action is None:  # a method the view does not map: it answers 405
            return True
        permission_map: dict[str, frozenset[str]] = getattr(view, "permission_map", {})
        required = permission_map[action]  # a KeyError here is an action its view forgot to map
        if ADMIN in required and not context.is_admin:
            raise exceptions.PermissionDenied(
                f"This needs the admin role with every permission ({_describe(ALL_PERMISSIONS)}); you hold "
                f"{_describe(context.permissions)} as {context.membership.role}."
            )
        if SESSION in required and context.token is not None:
            raise exceptions.PermissionDenied(
                "API tokens cannot create tokens; sign in to create one, or use manage.py create_token."
            )
        missing = sorted(required - context.permissions - {ADMIN, SESSION})
        if missing:
            how = "this token's scopes leave you" if context.token is not None and context.token.scopes else "you hold"
            raise exceptions.PermissionDenied(
                f"This needs the {', '.join(missing)} permission; {how} {_describe(context.permissions)} "
                f"(role: {context.membership.role})."
            )
        return True
