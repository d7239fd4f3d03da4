"""Read-only questions about the audit trail that features ask."""

from __future__ import annotations

from gdpr_requests.models import AuditEvent


def last_actor_type(reference: str, action: str) -> str:
    """The actor type of the newest ``action`` event of request ``reference`` ("" when there is none)."""
    return (
        AuditEvent.objects.filter(request_reference=reference, action=action)
        .order_by("-sequence")
        .values_list("actor_type", flat=True)
        .first()
        or ""
    )
