"""Operational endpoints: health, readiness, metrics. No personal data, cheap."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse


def healthz(request: HttpRequest) -> JsonResponse:
    """Process up. Cheap, no database."""
    return JsonResponse({"status": "ok"})
