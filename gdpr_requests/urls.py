"""Public portal and auditor report URLs (filled in by the portal and reports modules)."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "gdpr_requests"

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
]
