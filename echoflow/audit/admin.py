from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from echoflow.audit.models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin[AuditEntry]):
    list_display = ["created_at", "organization", "actor_label", "source", "action", "target_type", "target_repr"]
    list_filter = ["source", "action", "target_type", "organization"]
    search_fields = ["actor_label", "target_repr", "target_id", "request_id"]
    date_hierarchy = "created_at"

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in AuditEntry._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
