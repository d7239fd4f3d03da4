"""The auditor area, mounted at /reports/ (namespace "reports")."""

from __future__ import annotations

from django.urls import path

from gdpr_requests.reports import views

app_name = "reports"

urlpatterns = [
    path("", views.index, name="index"),
    path("audit-trail/", views.audit_trail, name="audit_trail"),
    path("summary/", views.summary_page, name="summary"),
    path("summary.pdf", views.summary_pdf, name="summary_pdf"),
    path("evidence/", views.evidence_lookup, name="evidence_lookup"),
    path("evidence/<str:reference>/", views.evidence_page, name="evidence"),
    path("evidence/<str:reference>.pdf", views.evidence_pdf, name="evidence_pdf"),
    path("evidence/<str:reference>.json", views.evidence_json_download, name="evidence_json"),
]
