"""Auditor reports: the data behind the compliance summary and the per-request evidence pack.

The builders here return plain data (numbers already formatted for display where a page and a PDF must agree),
so the HTML page (``reports.views``) and the PDF (``reports.pdf``, ReportLab) cannot disagree about a number.
Reading a report is itself audited (``report_record_access``).
"""

from __future__ import annotations

from gdpr_requests.reports.access import report_record_access
from gdpr_requests.reports.evidence import EvidenceNotFound, build_evidence_pack, evidence_json
from gdpr_requests.reports.summary import ComplianceSummary, build_summary, percentile

__all__ = [
    "ComplianceSummary",
    "EvidenceNotFound",
    "build_evidence_pack",
    "build_summary",
    "evidence_json",
    "percentile",
    "report_record_access",
]
