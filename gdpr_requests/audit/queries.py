"""Read-only questions about the audit trail that features ask."""

from __future__ import annotations

from django.db import connection

from gdpr_requests.audit import triggers
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


def length_and_head_sequence() -> tuple[int, int]:
    """(the last event's sequence, the chain head checkpoint's), in one round trip for the metrics scrape.

    The sequence has no gaps in an intact trail, so the first is its length; the second falls back to it
    before the first checkpoint. Both are index lookups.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT (SELECT MAX(sequence) FROM {triggers.TABLE}), "  # noqa: S608 (table names are constants)
            f"(SELECT sequence FROM {triggers.HEAD_TABLE} WHERE id = 1)"
        )
        length, head = cursor.fetchone()
    return length or 0, head if head is not None else (length or 0)
