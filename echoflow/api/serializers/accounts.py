"""Organizations, members, roles, API tokens and the audit log on the wire."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from echoflow.accounts.models import ALL_PERMISSIONS, ApiToken, Membership, Organization, Role
from echoflow.api.serializers.fields import documented_enum
from echoflow.audit.models import AuditEntry


class OrganizationSerializer(serializers.ModelSerializer[Organization]):
    role = serializers.SerializerMethodField(help_text="The caller's role here.")
    permissions = serializers.SerializerMethodField(help_text="What the caller may do here (role ∩ token scopes).")

    class Meta:
        model = Organization
        fields = ["id", "name", "slug", "max_concurrent_runs", "created_at", "role", "permissions"]
        read_only_fields = fields

    def get_role(self, organization: Organization) -> str:
        return str(self.context["role"])

    def get_permissions(self, organization: Organization) -> list[str]:
        return sorted(self.context["permissions"])


class OrganizationUpdateSerializer(serializers.ModelSerializer[Organization]):
    """Described here, checked by accounts.services.organization_update."""

    class Meta:
        model = Organization
        fields = ["name", "max_concurrent_runs"]


class MemberSerializer(serializers.ModelSerializer[Membership]):
    user_id = serializers.IntegerField(read_only=True)
    username = serializers.CharField(source="user.username", read_only=True)
    email = serializers.CharField(source="user.email", read_only=True)
    permissions = serializers.SerializerMethodField()

    class Meta:
        model = Membership
        fields = ["id", "user_id", "username", "email", "role", "permissions", "created_at"]
        read_only_fields = fields

    def get_permissions(self, membership: Membership) -> list[str]:
        return sorted(membership.permissions)


class MemberCreateSerializer(serializers.Serializer[Any]):
    username = serializers.CharField(max_length=150, help_text="An existing user's name.")
    role = documented_enum(Role.choices)


class MemberUpdateSerializer(serializers.Serializer[Any]):
    role = documented_enum(Role.choices)


class RoleSerializer(serializers.Serializer[Any]):
    role = serializers.CharField()
    permissions = serializers.ListField(child=serializers.CharField())


class TokenSerializer(serializers.ModelSerializer[ApiToken]):
    username = serializers.CharField(source="user.username", read_only=True)
    is_active = serializers.BooleanField(read_only=True)

    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "scopes", "username", "created_at", "last_used_at", "revoked_at", "is_active"]
        read_only_fields = fields


class TokenCreatedSerializer(TokenSerializer):
    token = serializers.SerializerMethodField(help_text="The secret. Shown this once; store it now.")

    class Meta(TokenSerializer.Meta):
        fields = [*TokenSerializer.Meta.fields, "token"]
        read_only_fields = fields

    def get_token(self, token: ApiToken) -> str:
        return str(self.context["plaintext"])


class TokenCreateSerializer(serializers.Serializer[Any]):
    """Checked by accounts.services.token_create."""

    name = serializers.CharField(help_text="What the token is for, e.g. ci-deploy.")
    scopes = serializers.ListField(
        child=documented_enum([(name, name) for name in sorted(ALL_PERMISSIONS)]),
        required=False,
        default=list,
        help_text="Permissions the token may use; empty: all of your role's (as far as you may grant them).",
    )


class AuditEntrySerializer(serializers.ModelSerializer[AuditEntry]):
    class Meta:
        model = AuditEntry
        fields = [
            "id",
            "created_at",
            "actor",
            "actor_label",
            "source",
            "action",
            "target_type",
            "target_id",
            "target_repr",
            "changes",
            "request_id",
        ]
        read_only_fields = fields
