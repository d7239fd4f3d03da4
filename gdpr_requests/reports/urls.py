"""The auditor area, mounted at /reports/ (namespace "reports")."""

from __future__ import annotations

from django.urls import path

from gdpr_requests.reports import views as reports

app_name = "reports"

urlpatterns = [
    path("", reports.index, name="index"),
    path("audit-trail/", reports.audit_trail, name="audit_trail"),
    path("summary/", reports.summary_page, name="summary"),
    path("summary.pdf", reports.summary_pdf, name="summary_pdf"),
    path("evidence/", reports.evidence_lookup, name="evidence_lookup"),
    path("evidence/<str:reference>/", reports.evidence_page, name="evidence"),
    path("evidence/<str:reference>.pdf", reports.evidence_pdf, name="evidence_pdf"),
    path("evidence/<str:reference>.json", reports.evidence_json_download, name="evidence_json"),
]
