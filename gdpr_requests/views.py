"""Views. The public portal, auditor reports and health checks are added by their own modules."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse


def healthz(request: HttpRequest) -> JsonResponse:
    """Process up. Cheap, no database."""
    return JsonResponse({"status": "ok"})
