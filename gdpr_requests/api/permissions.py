"""Scopes: each view names the scope it needs per method; a key without it gets 403, no key 401."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, permissions
from rest_framework.request import Request

from gdpr_requests.models import ApiKey


class HasScope(permissions.BasePermission):
    """The view's ``required_scopes`` maps HTTP methods to a scope; a view without one refuses everyone."""

    def has_permission(self, request: Request, view: Any) -> bool:
        api_key = request.auth
        if not isinstance(api_key, ApiKey):
            raise exceptions.NotAuthenticated("Send an API key: 'Authorization: Bearer <key>'.")
        method = "GET" if request.method == "HEAD" else request.method
        if method == "OPTIONS" or not hasattr(view, method.lower()):
            return True  # DRF answers with the metadata, or 405 for a method the view does not have
        scope = getattr(view, "required_scopes", {}).get(method)
        if scope is None or scope not in api_key.scopes:
            raise exceptions.PermissionDenied(f"This API key lacks the scope {scope!r}.")
        return True
