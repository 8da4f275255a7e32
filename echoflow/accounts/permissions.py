"""Who may do what in which organization. Roles map to permissions in accounts.models.ROLE_PERMISSIONS."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from echoflow.accounts.models import ROLE_PERMISSIONS, Membership, Organization

READ = "schedules:read"
WRITE = "schedules:write"
RUN = "schedules:run"
DELETE = "schedules:delete"


def membership_get(*, user: AbstractBaseUser | AnonymousUser, organization: Organization | int) -> Membership | None:
    if not user.is_authenticated:
        return None
    org_id = organization if isinstance(organization, int) else organization.pk
    return Membership.objects.filter(user_id=user.pk, organization_id=org_id).first()


def user_permissions(*, user: AbstractBaseUser | AnonymousUser, organization: Organization | int) -> frozenset[str]:
    membership = membership_get(user=user, organization=organization)
    return ROLE_PERMISSIONS[membership.role] if membership else frozenset()


def user_organizations(*, user: AbstractBaseUser | AnonymousUser) -> list[Organization]:
    if not user.is_authenticated:
        return []
    return list(Organization.objects.filter(memberships__user_id=user.pk).order_by("name"))
