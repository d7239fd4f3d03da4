"""Auditor reports: the data behind the compliance summary and the per-request evidence pack.

The builders here return plain data (numbers already formatted for display where a page and a PDF must agree);
``gdpr_requests.pdf`` renders it with ReportLab and ``gdpr_requests.views.reports`` renders it as HTML. Reading
a report is itself audited (``report_record_access``).
"""

from __future__ import annotations

from .access import report_record_access
from .evidence import EvidenceNotFound, build_evidence_pack, evidence_json
from .summary import ComplianceSummary, build_summary, percentile

__all__ = [
    "ComplianceSummary",
    "EvidenceNotFound",
    "build_evidence_pack",
    "build_summary",
    "evidence_json",
    "percentile",
    "report_record_access",
]
