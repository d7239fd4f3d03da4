"""Helpers for the API tests: keys made through the CLI and a client that sends them."""

from __future__ import annotations

from typing import Any

from rest_framework.test import APIClient

from tests.unit.management.cli_support import run_json

ALL_SCOPES = ("requests:write", "requests:read", "audit:read")


def make_key(name: str = "support-desk", scopes: tuple[str, ...] = ALL_SCOPES) -> dict[str, Any]:
    args = ["api_key", "create", "--name", name, "--json"]
    for scope in scopes:
        args += ["--scope", scope]
    return run_json(*args)


def client_for(key: str | None) -> APIClient:
    client = APIClient()
    if key is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def new_request_body(**overrides: Any) -> dict[str, Any]:
    body = {"kind": "deletion", "regulation": "gdpr", "email": "subject@example.com", "distinct_ids": ["u-1"]}
    body.update(overrides)
    return body
