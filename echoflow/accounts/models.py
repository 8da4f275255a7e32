"""Tenancy: organizations and who belongs to them with which role."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models


def _new_secret() -> str:
    return secrets.token_hex(32)


class Role(models.TextChoices):
    VIEWER = "viewer", "Viewer"
    OPERATOR = "operator", "Operator"
    EDITOR = "editor", "Editor"
    ADMIN = "admin", "Admin"


ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    Role.VIEWER: frozenset({"schedules:read"}),
    Role.OPERATOR: frozenset({"schedules:read", "schedules:run"}),
    Role.EDITOR: frozenset({"schedules:read", "schedules:write", "schedules:run"}),
    Role.ADMIN: frozenset({"schedules:read", "schedules:write", "schedules:run", "schedules:delete"}),
}


class Organization(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    max_concurrent_runs = models.PositiveIntegerField(
        default=100, help_text="At most this many runs of the organization execute at once."
    )
    signing_secret = models.CharField(
        max_length=128, default=_new_secret, help_text="Signs outgoing HTTP actions (HMAC-SHA256)."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "user"], name="membership_unique_user_per_org"),
            models.CheckConstraint(condition=models.Q(role__in=Role.values), name="membership_role_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization} ({self.role})"

    @property
    def permissions(self) -> frozenset[str]:
        return ROLE_PERMISSIONS[self.role]
