"""Operational endpoints (no personal data): liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from django.urls import path

from gdpr_requests.ops import views as ops

urlpatterns = [
    path("healthz", ops.healthz, name="healthz"),
    path("readyz", ops.readyz, name="readyz"),
    path("metrics", ops.metrics, name="metrics"),
]
