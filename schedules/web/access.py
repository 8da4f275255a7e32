"""Who sees what on the page: the organization in view, the user's permissions there, and object lookups that
answer 404 for another organization's schedule or run (never 403 with a hint), 403 for a missing permission."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest

from echoflow.accounts.models import Organization
from echoflow.accounts.permissions import DELETE, READ, RUN, WRITE, user_organizations, user_permissions
from runs.models import Run
from schedules.models import Schedule

ACTION_WORDS = {
    READ: "see schedules",
    WRITE: "create or change schedules",
    RUN: "run schedules or retry and cancel runs",
    DELETE: "delete schedules",
}


class NoOrganization(Exception):
    """The user belongs to no organization, so there is nothing to show."""


@dataclass(frozen=True)
class PageAccess:
    organization: Organization
    permissions: frozenset[str]
    organizations: list[Organization] = field(default_factory=list)

    @property
    def can_write(self) -> bool:
        return WRITE in self.permissions

    @property
    def can_run(self) -> bool:
        return RUN in self.permissions

    @property
    def can_delete(self) -> bool:
        return DELETE in self.permissions

    def require(self, permission: str) -> None:
        if permission not in self.permissions:
            raise PermissionDenied(
                f"Your role in {self.organization.name} does not allow you to {ACTION_WORDS[permission]}."
            )


def _user(request: HttpRequest) -> AbstractBaseUser | AnonymousUser:
    return request.user


def access_for(request: HttpRequest, organization: Organization, permission: str = READ) -> PageAccess:
    """The user's access to ``organization``: 404 when not a member, 403 when the role lacks ``permission``."""
    permissions = user_permissions(user=_user(request), organization=organization)
    if not permissions:
        raise Http404("No such organization.")
    access = PageAccess(organization=organization, permissions=permissions)
    access.require(permission)
    return access


def page_access(request: HttpRequest, slug: str | None, permission: str = READ) -> PageAccess:
    """The organization named by ``?org=`` (default: the user's first one) and the user's permissions in it."""
    organizations = user_organizations(user=_user(request))
    if not organizations:
        raise NoOrganization
    if slug:
        matches = [org for org in organizations if org.slug == slug]
        if not matches:
            raise Http404("No such organization.")
        organization = matches[0]
    else:
        organization = organizations[0]
    access = access_for(request, organization, permission)
    return PageAccess(organization=organization, permissions=access.permissions, organizations=organizations)


def schedule_for(request: HttpRequest, pk: int, permission: str = READ) -> tuple[Schedule, PageAccess]:
    schedule = (
        Schedule.objects.select_related("organization")
        .filter(pk=pk, organization__memberships__user=request.user.pk or 0)
        .first()
    )
    if schedule is None:
        raise Http404("No such schedule: it does not exist, was deleted, or belongs to another organization.")
    return schedule, access_for(request, schedule.organization, permission)


def run_for(request: HttpRequest, pk: int, permission: str = READ) -> tuple[Run, PageAccess]:
    run = (
        Run.objects.select_related("organization", "schedule")
        .filter(pk=pk, organization__memberships__user=request.user.pk or 0)
        .first()
    )
    if run is None:
        raise Http404("No such run: it does not exist or belongs to another organization.")
    return run, access_for(request, run.organization, permission)
