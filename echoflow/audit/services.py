from __future__ import annotations

from typing import Any

from django.db import models

from echoflow.audit.context import Actor, current_actor
from echoflow.audit.models import AuditEntry


def _jsonable(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, (str, int, float, bool, type(None), list, dict)):
        return value
    return str(value)


def audit_record(
    *,
    action: str,
    target: models.Model,
    organization_id: int | None,
    changes: dict[str, tuple[Any, Any]] | dict[str, Any] | None = None,
    actor: Actor | None = None,
) -> AuditEntry:
    """Record one change. ``changes`` maps a field to (before, after), or holds details of the action."""
    who = actor or current_actor()
    detail: dict[str, Any] = {}
    for key, value in (changes or {}).items():
        if isinstance(value, tuple) and len(value) == 2:
            detail[key] = {"before": _jsonable(value[0]), "after": _jsonable(value[1])}
        else:
            detail[key] = _jsonable(value)
    return AuditEntry.objects.create(
        organization_id=organization_id,
        actor_id=who.user_id,
        actor_label=who.label,
        source=who.source,
        action=action,
        target_type=target._meta.model_name or "",
        target_id=str(target.pk),
        target_repr=str(target)[:200],
        changes=detail,
        request_id=who.request_id,
    )
