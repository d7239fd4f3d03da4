"""A rate limit per API key (settings API_RATE_LIMIT), counted in the Django cache (Redis in production)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from gdpr_requests.models import ApiKey


class ApiKeyRateThrottle(SimpleRateThrottle):
    scope = "api_key"

    def get_rate(self) -> str:
        return settings.API_RATE_LIMIT  # read per request, so that tests and operators can change it

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        # Keyed on the key's id, not the client address: one key shared by a fleet of servers is one caller.
        if not isinstance(request.auth, ApiKey):
            return None
        return f"throttle:api_key:{request.auth.pk}"
