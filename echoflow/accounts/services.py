"""Writes about tenancy: organizations, memberships and API tokens. Every change here is on the audit log."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.text import slugify

from echoflow.accounts.models import ALL_PERMISSIONS, ROLE_PERMISSIONS, ApiToken, Membership, Organization, Role
from echoflow.audit.services import audit_record

TOKEN_NAME_MAX = 100
ORG_NAME_MAX = 200
MAX_CONCURRENT_RUNS_LIMIT = 1_000_000
# A token is "ef_" + 8 hex characters (the prefix, stored in clear) + "_" + a URL-safe secret.
TOKEN_PATTERN = re.compile(r"^ef_(?P<prefix>[0-9a-f]{8})_[A-Za-z0-9_-]{20,100}$")
# Recording every use would turn each API read into a write; a minute's precision is what people look for.
LAST_USED_PRECISION = timedelta(minutes=1)


class TokenError(Exception):
    """The presented token is not usable; the message says why, in words fit for the client."""


def organization_get_or_create(*, name: str, slug: str | None = None) -> Organization:
    org, _ = Organization.objects.get_or_create(slug=slug or slugify(name), defaults={"name": name})
    return org


@transaction.atomic
def organization_update(*, organization: Organization, data: Mapping[str, Any]) -> Organization:
    """Rename an organization or change its run limit (its slug is its stable handle and does not change)."""
    errors: dict[str, str] = {}
    for key in sorted(set(data) - {"name", "max_concurrent_runs"}):
        errors[key] = "cannot be changed here" if key in {"id", "slug", "created_at"} else "is not a field of it"
    changes: dict[str, tuple[Any, Any]] = {}
    if "name" in data:
        name = data["name"]
        if not isinstance(name, str) or not name.strip():
            errors["name"] = "is required and must be text"
        elif len(name.strip()) > ORG_NAME_MAX:
            errors["name"] = f"is {len(name.strip())} characters long; the limit is {ORG_NAME_MAX}"
        elif name.strip() != organization.name:
            changes["name"] = (organization.name, name.strip())
    if "max_concurrent_runs" in data:
        limit = data["max_concurrent_runs"]
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_CONCURRENT_RUNS_LIMIT:
            errors["max_concurrent_runs"] = f"must be a whole number between 1 and {MAX_CONCURRENT_RUNS_LIMIT}"
        elif limit != organization.max_concurrent_runs:
            changes["max_concurrent_runs"] = (organization.max_concurrent_runs, limit)
    if errors:
        raise ValidationError(errors)
    if changes:
        for field, (_, after) in changes.items():
            setattr(organization, field, after)
        organization.save(update_fields=list(changes))
        audit_record(
            action="organization.update", target=organization, organization_id=organization.pk, changes=changes
        )
    return organization


def _lock_admins(organization: Organization) -> list[Membership]:
    """The organization's admin memberships, locked: two demotions racing must not leave it without an admin."""
    return list(
        Membership.objects.select_for_update().filter(organization=organization, role=Role.ADMIN).order_by("pk")
    )


@transaction.atomic
def membership_set(*, organization: Organization, user: AbstractBaseUser, role: str) -> Membership:
    """Add ``user`` to the organization with ``role``, or change their role. The last admin cannot be demoted."""
    if role not in Role.values:
        raise ValidationError({"role": f"{role!r} is not one of {', '.join(Role.values)}"})
    existing = Membership.objects.select_for_update().filter(organization=organization, user_id=user.pk).first()
    if existing is not None and existing.role == role:
        return existing
    if existing is not None and existing.role == Role.ADMIN:
        admins = _lock_admins(organization)
        if len(admins) <= 1:
            raise ValidationError({"role": "this is the organization's last admin; make someone else admin first"})
    membership, _ = Membership.objects.update_or_create(
        organization=organization, user_id=user.pk, defaults={"role": role}
    )
    audit_record(
        action="membership.set",
        target=membership,
        organization_id=organization.pk,
        changes={"user": user.get_username(), "role": (existing.role if existing else None, role)},
    )
    return membership


@transaction.atomic
def membership_add(*, organization: Organization, username: Any, role: Any) -> Membership:
    """Add an existing user, by name, to the organization. Changing a member's role is membership_set's job."""
    user = get_user_model().objects.filter(username=username).first() if isinstance(username, str) else None
    errors: dict[str, str] = {}
    if user is None:
        errors["username"] = f"there is no user named {str(username)[:150]!r}"
    elif Membership.objects.filter(organization=organization, user_id=user.pk).exists():
        errors["username"] = f"{username!r} is already a member; change their role instead"
    if role not in Role.values:
        errors["role"] = f"{role!r} is not one of {', '.join(Role.values)}"
    if errors:
        raise ValidationError(errors)
    assert user is not None
    return membership_set(organization=organization, user=user, role=str(role))


@transaction.atomic
def membership_remove(*, membership: Membership) -> None:
    """Take a user out of the organization; their tokens for it stop working (they are revoked)."""
    locked = Membership.objects.select_for_update().select_related("user").get(pk=membership.pk)
    if locked.role == Role.ADMIN and len(_lock_admins(locked.organization)) <= 1:
        raise ValidationError({"role": "this is the organization's last admin; make someone else admin first"})
    now = timezone.now()
    for token in ApiToken.objects.filter(
        organization_id=locked.organization_id, user_id=locked.user_id, revoked_at__isnull=True
    ):
        token_revoke(token=token, now=now)
    audit_record(
        action="membership.remove",
        target=locked,
        organization_id=locked.organization_id,
        changes={"user": locked.user.get_username(), "role": locked.role},
    )
    locked.delete()


def user_get_or_create(*, username: str, email: str = "") -> tuple[AbstractBaseUser, bool]:
    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(username=username, defaults={"email": email})
    return user, created


# --- API tokens ------------------------------------------------------------------------------------------------------
def token_hash(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def _check_scopes(scopes: Iterable[Any], *, granted: frozenset[str]) -> list[str]:
    if isinstance(scopes, str | bytes | Mapping):
        raise ValidationError({"scopes": 'must be a list of permissions, e.g. ["schedules:read"]'})
    wanted = list(scopes)
    unknown = [s for s in wanted if not isinstance(s, str) or s not in ALL_PERMISSIONS]
    if unknown:
        raise ValidationError(
            {"scopes": f"{unknown[0]!r} is not a permission; use {', '.join(sorted(ALL_PERMISSIONS))}"}
        )
    beyond = sorted(set(wanted) - granted)
    if beyond:
        raise ValidationError(
            {"scopes": f"{', '.join(beyond)} is more than you may grant (you hold {', '.join(sorted(granted))})"}
        )
    return sorted(set(wanted))


@transaction.atomic
def token_create(
    *,
    user: AbstractBaseUser,
    organization: Organization,
    name: str,
    scopes: Iterable[Any] = (),
    grantable: frozenset[str] | None = None,
) -> tuple[ApiToken, str]:
    """A new token for ``user`` in ``organization``; returns it with its plaintext, which is never stored.

    ``scopes`` narrow what the token may do (empty: everything its user's role allows). ``grantable`` is what the
    creator holds: a request made with a scoped token can only create tokens as narrow as its own.
    """
    errors: dict[str, str] = {}
    if not isinstance(name, str) or not name.strip():
        errors["name"] = "is required: say what the token is for (e.g. 'ci-deploy')"
    elif len(name.strip()) > TOKEN_NAME_MAX:
        errors["name"] = f"is {len(name.strip())} characters long; the limit is {TOKEN_NAME_MAX}"
    membership = Membership.objects.filter(organization=organization, user_id=user.pk).first()
    if membership is None:
        errors["user"] = f"{user.get_username()!r} is not a member of {organization.slug!r}"
    if errors:
        raise ValidationError(errors)
    assert membership is not None
    granted = ROLE_PERMISSIONS[membership.role] & (grantable if grantable is not None else ALL_PERMISSIONS)
    chosen = _check_scopes(scopes, granted=granted)
    if not chosen and granted != ROLE_PERMISSIONS[membership.role]:
        # "All of the role" would be more than the creator holds; the new token gets exactly what they hold.
        chosen = sorted(granted)
    for _ in range(5):
        prefix = secrets.token_hex(4)
        plaintext = f"ef_{prefix}_{secrets.token_urlsafe(30)}"
        try:
            with transaction.atomic():
                token = ApiToken.objects.create(
                    user_id=user.pk,
                    organization=organization,
                    name=name.strip(),
                    prefix=prefix,
                    secret_hash=token_hash(plaintext),
                    scopes=chosen,
                )
            break
        except IntegrityError:  # a prefix collision (1 in 4 billion): draw again
            continue
    else:  # pragma: no cover - five collisions in a row means the random source is broken
        raise RuntimeError("could not draw a unique token prefix")
    audit_record(
        action="token.create",
        target=token,
        organization_id=organization.pk,
        changes={"name": token.name, "user": user.get_username(), "prefix": prefix, "scopes": chosen},
    )
    return token, plaintext


@transaction.atomic
def token_revoke(*, token: ApiToken, now: datetime | None = None) -> bool:
    """Revoke a token for good; False if it already was. Its row stays, for the audit log and the list."""
    now = now or timezone.now()
    revoked = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=now)
    token.refresh_from_db(fields=["revoked_at"])
    if revoked:
        audit_record(
            action="token.revoke",
            target=token,
            organization_id=token.organization_id,
            changes={"name": token.name, "prefix": token.prefix},
        )
    return bool(revoked)


def token_authenticate(*, plaintext: str, now: datetime | None = None) -> ApiToken:
    """The active token matching ``plaintext``, with its user and organization; raises TokenError otherwise."""
    match = TOKEN_PATTERN.match(plaintext)
    if match is None:
        raise TokenError("the token is malformed; it looks like ef_<8 characters>_<secret>")
    token = ApiToken.objects.select_related("user", "organization").filter(prefix=match["prefix"]).first()
    if token is None or not hmac.compare_digest(token.secret_hash, token_hash(plaintext)):
        raise TokenError("the token is not valid")
    if token.revoked_at is not None:
        raise TokenError(f"the token {token.name!r} was revoked")
    if not token.user.is_active:
        raise TokenError("the token's user is deactivated")
    now = now or timezone.now()
    # Written at most once a minute: the row just read says whether it is due, so most requests make no UPDATE
    # round trip at all; the condition in the UPDATE keeps concurrent requests from all writing it.
    if token.last_used_at is None or token.last_used_at < now - LAST_USED_PRECISION:
        ApiToken.objects.filter(pk=token.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_PRECISION)
        ).update(last_used_at=now)
    return token
