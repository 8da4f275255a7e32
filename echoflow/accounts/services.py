from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils.text import slugify

from echoflow.accounts.models import Membership, Organization, Role


def organization_get_or_create(*, name: str, slug: str | None = None) -> Organization:
    org, _ = Organization.objects.get_or_create(slug=slug or slugify(name), defaults={"name": name})
    return org


@transaction.atomic
def membership_set(*, organization: Organization, user: AbstractBaseUser, role: str) -> Membership:
    if role not in Role.values:
        raise ValueError(f"role: {role!r} is not one of {', '.join(Role.values)}")
    membership, _ = Membership.objects.update_or_create(
        organization=organization, user_id=user.pk, defaults={"role": role}
    )
    return membership


def user_get_or_create(*, username: str, email: str = "") -> tuple[AbstractBaseUser, bool]:
    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(username=username, defaults={"email": email})
    return user, created
