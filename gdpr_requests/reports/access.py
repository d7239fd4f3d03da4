"""Reading a report is an audited act: who read which report, for which period or request, in which format."""

from __future__ import annotations

from typing import Any

from gdpr_requests.audit.chain import Actor, audit_record
from gdpr_requests.models import AuditEvent

REPORTS = frozenset({"audit_trail", "compliance_summary", "evidence_pack"})
HTML_FORMAT = "html"


def report_record_access(
    *, user: Any, report: str, fmt: str, scope: dict[str, Any], request_reference: str = ""
) -> AuditEvent:
    """Record that ``user`` viewed (``fmt="html"``) or downloaded a report.

    ``scope`` names the period, filters or reference the report covers; it holds no personal data (the audit
    payload check refuses such keys). An evidence pack carries its request's reference, so reading it shows up
    in that request's own timeline.
    """
    if report not in REPORTS:
        raise ValueError(f"Unknown report {report!r}.")
    action = "report.viewed" if fmt == HTML_FORMAT else "report.downloaded"
    return audit_record(
        action=action,
        actor=Actor.for_user(user),
        request_reference=request_reference,
        payload={"report": report, "format": fmt, **scope},
    )
