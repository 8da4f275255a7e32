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


ALL_PERMISSIONS: frozenset[str] = ROLE_PERMISSIONS[Role.ADMIN]


class ApiToken(models.Model):
    """A credential for programs: ``Authorization: Bearer ef_<prefix>_<secret>``.

    Only a SHA-256 hash of the whole token is stored; the plaintext is shown once, when it is created. The prefix
    is kept in clear (and indexed) so a request finds its row with one lookup and people can tell tokens apart.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=8, unique=True, help_text="The first characters of the token, in clear.")
    secret_hash = models.CharField(max_length=64, help_text="SHA-256 of the whole token, hex.")
    scopes = models.JSONField(
        default=list, blank=True, help_text="Permissions this token may use; empty means all of its user's role."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["organization", "user"], name="apitoken_org_user_idx")]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def effective_permissions(self, role: str) -> frozenset[str]:
        """What a request with this token may do: its user's role, narrowed to its scopes if it has any."""
        granted = ROLE_PERMISSIONS.get(role, frozenset())
        return granted & frozenset(self.scopes) if self.scopes else granted
