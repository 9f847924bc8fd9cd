"""The audit log: one call per action that touches a subject's data or a privacy request."""

from __future__ import annotations

from privacy.models import AuditEntry

SYSTEM = "system"


def actor_label(actor) -> str:
    """A user's name, an API client's name, or `system` for tasks."""
    if actor is None:
        return SYSTEM
    if getattr(actor, "is_authenticated", False) and hasattr(actor, "get_username"):
        return actor.get_username()
    return f"api:{actor}"


def audit_record(*, action: str, actor=None, target=None, target_type: str = "", target_id: str = "",
                 details: dict | None = None) -> AuditEntry:
    """Record an action. `actor` is a user, an API client or None (a system task); `target` any
    model instance (its type and id are kept, nothing else)."""
    if target is not None:
        target_type, target_id = target._meta.label_lower, str(target.pk)
    user = actor if hasattr(actor, "get_username") and getattr(actor, "is_authenticated", False) else None
    return AuditEntry.objects.create(
        actor=user, actor_label=actor_label(actor), action=action, target_type=target_type, target_id=target_id,
        details=details or {},
    )
